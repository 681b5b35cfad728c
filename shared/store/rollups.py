"""What one finalized trace adds to the rollups, so that every backend can add it once and subtract it
exactly on re-finalization or purge (never double counted). Pure: no I/O.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence

import msgspec

from shared.analysis import TraceAnalysis
from shared.models import Span
from shared.store.base import BUCKET_BOUNDS_US

HOUR_US = 3_600_000_000


class Contribution(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One trace's share of every rollup. Stored with the trace; subtracted before it is replaced."""

    failed: bool
    duration_us: int
    services: dict[str, tuple[int, int, int]]  # service -> (spans, errors, total duration µs)
    buckets: dict[str, dict[int, int]]  # service -> histogram bucket -> spans
    operations: dict[str, dict[str, int]]  # service -> operation -> spans
    deps: list[tuple[int, str, str, int, int]]  # (hour, parent, child, calls, errors)


def bucket_of(duration_us: int) -> int:
    return bisect.bisect_left(BUCKET_BOUNDS_US, duration_us)


def contribution(analysis: TraceAnalysis, spans: Sequence[Span]) -> Contribution:
    """One pass over the spans with plain dicts (a hot loop at finalization: no defaultdict factories)."""
    services: dict[str, list[int]] = {}
    buckets: dict[str, dict[int, int]] = {}
    operations: dict[str, dict[str, int]] = {}
    bounds = BUCKET_BOUNDS_US
    for span in spans:
        service = span.service_name
        duration = span.duration_us or 0
        row = services.get(service)
        if row is None:
            row = services[service] = [0, 0, 0]
            buckets[service] = {}
            operations[service] = {}
        row[0] += 1
        if span.status == "error":
            row[1] += 1
        row[2] += duration
        hist = buckets[service]
        bucket = bisect.bisect_left(bounds, duration)
        hist[bucket] = hist.get(bucket, 0) + 1
        ops = operations[service]
        ops[span.operation_name] = ops.get(span.operation_name, 0) + 1
    hour = analysis.start_us // HOUR_US
    return Contribution(
        failed=analysis.failed,
        duration_us=analysis.duration_us,
        services={k: (v[0], v[1], v[2]) for k, v in services.items()},
        buckets=buckets,
        operations=operations,
        deps=[(hour, d.parent, d.child, d.calls, d.errors) for d in analysis.dependencies],
    )


class RollupDelta:
    """Sum of many contributions, each added (+1) or subtracted (-1), ready for one upsert per table."""

    def __init__(self) -> None:
        self.completed = 0
        self.failed = 0
        self.duration_us = 0
        self.services: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.buckets: dict[tuple[str, int], int] = defaultdict(int)
        self.operations: dict[tuple[str, str], int] = defaultdict(int)
        self.deps: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])

    def add(self, c: Contribution, sign: int) -> None:
        if c.failed:
            self.failed += sign
        else:
            self.completed += sign
        self.duration_us += sign * c.duration_us
        for service, (count, errors, total) in c.services.items():
            row = self.services[service]
            row[0] += sign * count
            row[1] += sign * errors
            row[2] += sign * total
        for service, hist in c.buckets.items():
            for bucket, n in hist.items():
                self.buckets[service, bucket] += sign * n
        for service, ops in c.operations.items():
            for op, n in ops.items():
                self.operations[service, op] += sign * n
        for hour, parent, child, calls, errors in c.deps:
            dep = self.deps[hour, parent, child]
            dep[0] += sign * calls
            dep[1] += sign * errors

    def service_rows(self) -> Iterable[tuple[str, int, int, int]]:
        return ((s, v[0], v[1], v[2]) for s, v in self.services.items() if any(v))

    def bucket_rows(self) -> Iterable[tuple[str, int, int]]:
        return ((s, b, n) for (s, b), n in self.buckets.items() if n)

    def operation_rows(self) -> Iterable[tuple[str, str, int]]:
        return ((s, o, n) for (s, o), n in self.operations.items() if n)

    def dep_rows(self) -> Iterable[tuple[int, str, str, int, int]]:
        return ((h, p, c, v[0], v[1]) for (h, p, c), v in self.deps.items() if any(v))


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Contribution)


def encode_contribution(c: Contribution) -> bytes:
    return _encoder.encode(c)


def decode_contribution(data: bytes | str) -> Contribution:
    return _decoder.decode(data)
