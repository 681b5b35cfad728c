"""Zipkin v2 JSON (``zipkin_json``): a list of spans (a single span object is accepted too), as Zipkin's
Kafka reporters write it to the ``zipkin`` topic (no message key).

=================================  =====================================================================
Zipkin v2                          native span
=================================  =====================================================================
``traceId``                        lowercase hex, normalized as Zipkin does: 1..32 hex characters, padded
                                   on the left to 16 or 32; a 32-character id whose high 64 bits are zero
                                   becomes its 16-character low half; all zeros: :class:`DecodeError`
``id``                             lowercase hex, 1..16 characters padded to 16; all zeros: DecodeError
``parentId``                       as ``id``; absent, all zeros or equal to ``id``: ``None`` (a root)
``name``                           ``operation_name`` (absent or empty: ``unknown``)
``kind``                           server, client, producer, consumer (absent or unknown: no kind)
``timestamp`` (µs)                 ``start_time_us`` (absent or 0: :class:`DecodeError`)
``duration`` (µs)                  ``duration_us`` (absent or 0, Zipkin's "unknown": an open span)
``localEndpoint.serviceName``      ``service_name`` (absent or empty: ``unknown``)
``remoteEndpoint.serviceName``     tag ``peer.service`` (unless the span has that tag already)
``tags``                           tags; a tag ``error`` (any value) makes the status "error"
``annotations``                    logs: ``timestamp`` → ``timestamp_us``, ``value`` → field ``event``
``shared: true``                   tag ``shared`` = true, and the span id becomes ``<id>:shared``
``debug``, endpoint addresses      ignored
=================================  =====================================================================

Why ``<id>:shared``: with B3 "single host spans" the server half of an RPC reuses the client's span id
(``shared: true``). The store keys spans by (trace id, span id), so the server half would overwrite the
client half. Renamed, the server half becomes a child of the client half (its ``parentId`` is set to the
shared id) and both are kept; spans the server started still hang off the shared id, i.e. the client half.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec

from shared.codecs.errors import DecodeError
from shared.codecs.otlp import bounded_name, to_tags
from shared.models import Event, Kind, Log, Span, Tags

UNKNOWN: Final = "unknown"
SHARED_SUFFIX: Final = ":shared"
KINDS: Final[dict[str, Kind]] = {"SERVER": "server", "CLIENT": "client", "PRODUCER": "producer", "CONSUMER": "consumer"}

Micros = Annotated[int, msgspec.Meta(ge=0)]
_HEX: Final = re.compile(r"[0-9a-fA-F]+")


class _Endpoint(msgspec.Struct, rename="camel", kw_only=True):
    service_name: str | None = None


class _Annotation(msgspec.Struct, kw_only=True):
    timestamp: Micros
    value: str


class _Span(msgspec.Struct, rename="camel", kw_only=True):
    trace_id: str
    id: str
    parent_id: str | None = None
    name: str | None = None
    kind: str | None = None
    timestamp: Micros | None = None
    duration: Micros | None = None
    shared: bool | None = None
    local_endpoint: _Endpoint | None = None
    remote_endpoint: _Endpoint | None = None
    annotations: list[_Annotation] = []
    tags: dict[str, str | int | float | bool] = {}  # Zipkin's are strings; other scalars are kept as given


_decoder = msgspec.json.Decoder(list[_Span] | _Span)


def decode_zipkin_json(value: bytes) -> list[Event]:
    """Decode one Zipkin v2 JSON message. Raises :class:`DecodeError` with the reason."""
    try:
        decoded = _decoder.decode(value)
    except msgspec.DecodeError as exc:  # ValidationError included: the message names the field
        raise DecodeError(f"not Zipkin v2 JSON: {exc}") from None
    except RecursionError:
        raise DecodeError("not Zipkin v2 JSON: nested too deeply") from None
    spans = decoded if isinstance(decoded, list) else [decoded]
    events: list[Event] = []
    for i, span in enumerate(spans):
        try:
            events.append(_to_span(span))
        except DecodeError as exc:
            raise DecodeError(f"span {i}: {exc}") from None
    return events


def _to_span(span: _Span) -> Span:
    trace_id = _trace_id(span.trace_id)
    span_id = _span_id(span.id, "id")
    parent = _span_id(span.parent_id, "parentId") if span.parent_id and span.parent_id.strip("0") else None
    if parent == span_id:
        parent = None
    if not span.timestamp:
        raise DecodeError("timestamp is missing")
    tags: Tags = to_tags(span.tags.items())
    remote = span.remote_endpoint.service_name if span.remote_endpoint else None
    if remote:
        tags.setdefault("peer.service", remote)
    kind = KINDS.get(span.kind) if span.kind else None
    if span.shared and kind != "client":
        tags["shared"] = True
        parent, span_id = span_id, span_id + SHARED_SUFFIX
    local = span.local_endpoint.service_name if span.local_endpoint else None
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        service_name=bounded_name(local or "", UNKNOWN),
        operation_name=bounded_name(span.name or "", UNKNOWN),
        start_time_us=span.timestamp,
        duration_us=span.duration or None,
        status="error" if "error" in span.tags else "success",
        kind=kind,
        tags=tags,
        logs=tuple(Log(timestamp_us=a.timestamp, fields={"event": a.value}) for a in span.annotations),
    )


def _hex(text: str, max_length: int, what: str) -> str:
    if not text or len(text) > max_length or not _HEX.fullmatch(text):
        raise DecodeError(f"{what} must be 1 to {max_length} hex characters, got {text[:80]!r}")
    if not text.strip("0"):
        raise DecodeError(f"{what} is all zeros")
    return text.lower()


def _trace_id(text: str) -> str:
    trace_id = _hex(text, 32, "traceId")
    if len(trace_id) == 32 and trace_id.startswith("0" * 16):
        return trace_id[16:]  # 64-bit id in 128-bit form: the same trace as its 16-character spelling
    return trace_id.zfill(16 if len(trace_id) <= 16 else 32)


def _span_id(text: str | None, what: str) -> str:
    return _hex(text or "", 16, what).zfill(16)
