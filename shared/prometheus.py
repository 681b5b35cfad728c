"""What the worker's and the API's metrics pages share: prometheus-client's registry and text exposition
(format 0.0.4, the header every Prometheus accepts) and the latency buckets. docs/adr/0009-prometheus-client.md
says why the library and what it measured.

Label values are the caller's to keep bounded (route templates, partitions), never raw user input.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.parser import text_string_to_metric_families

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

Series = tuple[str, tuple[tuple[str, str], ...]]
"""A sample's name and its labels (sorted pairs)."""

LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# No `*_created` series beside each counter and histogram: the pages keep the samples they always had.
disable_created_metrics()  # type: ignore[no-untyped-call]


def render(registry: CollectorRegistry) -> str:
    """The registry's metrics in the Prometheus text format."""
    return generate_latest(registry).decode()


def parse(text: str) -> dict[Series, float]:
    """A page's samples (prometheus-client's parser, so any label order or number form): series -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
