"""A small metrics registry rendered in the Prometheus text format (version 0.0.4).

Label values are escaped; series are kept per label tuple, so callers must keep label sets bounded
(route templates, partitions), never raw user input.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Final, TypeVar

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

Labels = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _labels(names: Sequence[str], values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)

    def samples(self) -> list[str]:
        raise NotImplementedError

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", *self.samples()]


_M = TypeVar("_M", bound=_Metric)


class Counter(_Metric):
    """A total; ``inc`` it, or give ``read`` to sample totals kept elsewhere at render time."""

    kind = "counter"

    def __init__(
        self,
        name: str,
        help_text: str,
        label_names: Sequence[str] = (),
        read: Callable[[], dict[Labels, float]] | None = None,
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.values: dict[Labels, float] = defaultdict(float)
        self._read = read

    def inc(self, amount: float = 1, *labels: str) -> None:
        self.values[labels] += amount

    def samples(self) -> list[str]:
        if self._read is not None:
            self.values = defaultdict(float, self._read())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(self.values.items())]


class Gauge(Counter):
    """A value that goes up and down; ``set`` it, or give ``read`` to sample it at render time."""

    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        label_names: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS_S,
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.buckets = tuple(buckets)
        self.counts: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = defaultdict(float)

    def observe(self, value: float, *labels: str) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(self.buckets) + 1)
        counts[bisect_left(self.buckets, value)] += 1
        self.sums[labels] += value

    def record(self, counts: Mapping[int, int], total: float, *labels: str) -> None:
        """Add observations already bucketed: ``counts`` maps a bucket index (the first bound >= the
        value, ``len(buckets)`` for +Inf) to how many; ``total`` is their sum."""
        row = self.counts.get(labels)
        if row is None:
            row = self.counts[labels] = [0] * (len(self.buckets) + 1)
        for bucket, n in counts.items():
            row[bucket] += n
        self.sums[labels] += total

    def samples(self) -> list[str]:
        lines = []
        for labels, counts in sorted(self.counts.items()):
            cumulative = 0
            for bound, n in zip((*self.buckets, None), counts, strict=True):
                cumulative += n
                le = 'le="+Inf"' if bound is None else f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_number(self.sums[labels])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {cumulative}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _M) -> _M:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(line for m in self._metrics for line in m.render()) + "\n"
