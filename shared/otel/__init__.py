"""The OpenTelemetry SDK side of the pipeline, for Python services (the ``otel`` extra):

* :class:`KafkaSpanExporter` (:mod:`.exporter`): finished spans to the native topic;
* :class:`RemoteSampler` (:mod:`.sampler`): per-operation probabilities polled from the query API's
  ``/api/sampling``.
"""

from __future__ import annotations

from .exporter import KafkaSpanExporter, span_from_sdk, spans_from_sdk
from .sampler import RemoteSampler

__all__ = ["KafkaSpanExporter", "RemoteSampler", "span_from_sdk", "spans_from_sdk"]
