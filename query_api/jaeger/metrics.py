"""Jaeger's metrics API (``/api/metrics/latencies|calls|errors|minstep``), served from the store's
time-bucketed rollups: the Jaeger UI's Monitor tab works with no Prometheus at all.

What Jaeger's query service computes from Prometheus span metrics (``internal/storage/metricstore/
prometheus/metricstore/reader.go``), computed here from the per-minute rollups of the spans:

* ``calls``: ``sum(rate(calls[ratePer])) by (service_name[, span_name])``: spans per second over the
  ``ratePer`` window ending at each point;
* ``errors``: the same rate of spans with an error divided by the call rate (0 where there are calls and
  no errors, as Jaeger fills it);
* ``latencies``: what ``histogram_quantile(q, sum(rate(duration_bucket[ratePer])) by (..., le))`` estimates:
  the quantile, in milliseconds, of the spans in the window, here from the rollups' latency sketch (within
  1% of the exact value at rank ``ceil(q n)``, :mod:`shared.store.sketch`; Prometheus's interpolation
  inside the fixed buckets could be off by most of a bucket);
* points every ``step`` from ``endTs - lookback`` (rounded up to a minute) to ``endTs``, as Prometheus's
  ``query_range`` evaluates them; a point without spans in its window is left out. The rollups are per
  minute, so ``step`` and ``ratePer`` are rounded up to whole minutes and ``minstep`` answers 60000.

Answers are ``metrics.MetricFamily`` in Jaeger's protobuf JSON (``type`` as the enum name, RFC 3339
timestamps, ``gaugeValue.doubleValue``), labels ``service_name`` and, grouped by operation,
``operation``; the names get ``service_operation_`` instead of ``service_`` when grouped, as Jaeger's.
One difference: ``metrics`` is always there, ``[]`` for a service and span kind without data, where
Jaeger's protobuf JSON leaves the empty list out and the Jaeger UI's Monitor tab then stops working.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Final

import msgspec
import numpy as np
from multidict import MultiMapping

from shared.store.base import RollupRow, Window
from shared.store.sketch import dense, dense_quantiles

from .common import go_bool, integer
from .errors import ParamError

MINUTE_MS: Final = 60_000
DEFAULT_LOOKBACK_MS: Final = 3_600_000
DEFAULT_STEP_MS: Final = 5_000
DEFAULT_RATE_PER_MS: Final = 600_000
MAX_POINTS: Final = 2_000
SPAN_KINDS: Final = {
    "unspecified": "",
    "internal": "internal",
    "server": "server",
    "client": "client",
    "producer": "producer",
    "consumer": "consumer",
}
"""Jaeger's span kind names (also accepted as ``SPAN_KIND_SERVER`` ...) -> the rollups' kind."""


class MetricsQuery(msgspec.Struct, frozen=True, kw_only=True):
    services: tuple[str, ...]
    group_by_operation: bool
    span_kinds: tuple[str, ...]
    end_ms: int
    lookback_ms: int
    step_ms: int
    rate_per_ms: int


def _span_kind(text: str) -> str:
    name = text.lower().removeprefix("span_kind_")
    if name not in SPAN_KINDS:
        raise ParamError("spanKind", f"unsupported span kind: '{text}'")
    return SPAN_KINDS[name]


def _millis(params: MultiMapping[str], name: str, default: int) -> int:
    text = params.get(name, "")
    return default if not text else integer(name, text)


def metrics_query(params: MultiMapping[str], now_ms: int) -> MetricsQuery:
    """Jaeger's ``parseMetricsQueryParams``: ``service`` (repeatable, required), ``groupByOperation``,
    ``spanKind`` (repeatable, default ``server``), ``endTs`` (default now), ``lookback`` (default 1 h),
    ``step`` (default 5 s), ``ratePer`` (default 10 min), all in milliseconds."""
    if "service" not in params:
        raise ParamError("service", "please provide at least one service name")
    grouped = go_bool("groupByOperation", params["groupByOperation"]) if params.get("groupByOperation") else False
    kinds = tuple(dict.fromkeys(_span_kind(k) for k in params.getall("spanKind", []))) or ("server",)
    end_ms = _millis(params, "endTs", now_ms)
    lookback = _millis(params, "lookback", DEFAULT_LOOKBACK_MS)
    step = _millis(params, "step", DEFAULT_STEP_MS)
    rate_per = _millis(params, "ratePer", DEFAULT_RATE_PER_MS)
    for name, value in (("endTs", end_ms), ("lookback", lookback), ("step", step), ("ratePer", rate_per)):
        if value < 0 or value > 10**13:
            raise ParamError(name, f"must be between 0 and {10**13} milliseconds")
    step = max(MINUTE_MS, -(-step // MINUTE_MS) * MINUTE_MS)
    rate_per = max(MINUTE_MS, -(-rate_per // MINUTE_MS) * MINUTE_MS)
    if lookback // step > MAX_POINTS:
        raise ParamError("step", f"gives more than {MAX_POINTS} points over the lookback: use a larger step")
    services = tuple(dict.fromkeys(s for s in params.getall("service", []) if s))
    return MetricsQuery(
        services=services,
        group_by_operation=grouped,
        span_kinds=kinds,
        end_ms=end_ms,
        lookback_ms=lookback,
        step_ms=step,
        rate_per_ms=rate_per,
    )


# -- the MetricFamily JSON ----------------------------------------------------------------------------


class GaugeValue(msgspec.Struct, rename="camel"):
    double_value: float


class MetricPoint(msgspec.Struct, rename="camel"):
    gauge_value: GaugeValue
    timestamp: str


class Label(msgspec.Struct):
    name: str
    value: str


class Metric(msgspec.Struct, rename="camel"):
    labels: list[Label]
    metric_points: list[MetricPoint]


class MetricFamily(msgspec.Struct):
    """Jaeger's ``MetricFamily``; ``metrics`` is always written (``[]`` without data: see the module)."""

    name: str
    type: str
    help: str
    metrics: list[Metric] = []


def _timestamp(ms: int) -> str:
    """RFC 3339 in UTC, as protobuf's JSON writes a Timestamp (fraction only when not whole seconds)."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ms % 1000:03d}Z" if ms % 1000 else "Z")


class Series(msgspec.Struct):
    """One series' minutes: minute start (ms) -> [count, errors], and (minute start, packed sketch) pairs."""

    counts: dict[int, list[int]] = msgspec.field(default_factory=dict)
    sketches: list[tuple[int, bytes]] = msgspec.field(default_factory=list)


class Point(msgspec.Struct, frozen=True):
    t_ms: int
    calls: int
    errors: int
    latency_us: float
    """The quantile asked for (0 when none was)."""


def rollup_window(query: MetricsQuery) -> Window:
    """The minutes whose rollups the points of ``query`` need: from the first point's ``ratePer`` window to
    ``endTs``."""
    first = query.end_ms - query.lookback_ms - query.rate_per_ms
    return Window(start_us=max(0, first) * 1000, end_us=max(first + 1, query.end_ms + 1) * 1000)


def _minute_series(rows: Mapping[str, Sequence[RollupRow]], query: MetricsQuery) -> dict[tuple[str, str], Series]:
    """Per (service, operation or "") the minute sums of the rollup ``rows`` (per service) of the span kinds
    asked for."""
    out: dict[tuple[str, str], Series] = defaultdict(Series)
    for service, service_rows in rows.items():
        for row in service_rows:
            if row.key[2] not in query.span_kinds:
                continue
            series = out[service, row.key[1] if query.group_by_operation else ""]
            minute = row.t_us // 1000
            values = series.counts.get(minute)
            if values is None:
                values = series.counts[minute] = [0, 0]
            values[0] += row.count
            values[1] += row.errors
            if row.sketch:
                series.sketches.append((minute, row.sketch))
    return out


def _points(series: Series, query: MetricsQuery, quantile: float | None = None) -> list[Point]:
    """Every point with spans: its calls and errors over its ``ratePer`` window [t - ratePer, t), and the
    ``quantile`` of their latency if asked. Prefix sums over the minutes (the sketches as the rows of one
    minutes x bins array): O(minutes + points) array operations of the bins' width."""
    if not series.counts:
        return []
    first = min(series.counts)
    minutes = (max(series.counts) - first) // MINUTE_MS + 1
    counts = np.zeros((minutes + 1, 2), dtype=np.int64)
    for minute, values in series.counts.items():
        counts[(minute - first) // MINUTE_MS + 1] = values
    np.cumsum(counts, axis=0, out=counts)

    def upto(t: int) -> int:  # the prefix row summing the minutes that start before t
        return min(max(0, -(-(t - first) // MINUTE_MS)), minutes)

    times, high, low = [], [], []
    start = query.end_ms - query.lookback_ms  # points at start, start + step, ... as Prometheus's query_range
    t = -(-start // MINUTE_MS) * MINUTE_MS  # (from the minute the start falls in)
    while t <= query.end_ms:
        times.append(t)
        high.append(upto(t))
        low.append(upto(t - query.rate_per_ms))
        t += query.step_ms
    sums = counts[high] - counts[low]
    kept = np.flatnonzero(sums[:, 0] > 0).tolist()
    latencies = [0.0] * len(kept)
    if quantile is not None and kept:
        placed = [((minute - first) // MINUTE_MS + 1, packed) for minute, packed in series.sketches]
        sketches, first_bin = dense(placed, minutes + 1)
        np.cumsum(sketches, axis=0, out=sketches)
        chosen = np.array(kept)
        windows = sketches[np.array(high)[chosen]] - sketches[np.array(low)[chosen]]
        latencies = dense_quantiles(windows, first_bin, quantile)
    return [
        Point(t_ms=times[i], calls=int(sums[i, 0]), errors=int(sums[i, 1]), latency_us=latency)
        for i, latency in zip(kept, latencies, strict=True)
    ]


def _labels(service: str, operation: str, grouped: bool) -> list[Label]:
    labels = [Label(name="service_name", value=service)]
    if grouped:
        labels.append(Label(name="operation", value=operation))
    return labels


def metric_family(
    query: MetricsQuery, rows: Mapping[str, Sequence[RollupRow]], kind: str, quantile: float = 0.0
) -> MetricFamily:
    """The ``latencies``, ``calls`` or ``errors`` family of ``query`` from the minute rollup ``rows`` of
    its services over :func:`rollup_window`."""
    if kind == "latencies":
        name, help_text = "service_latencies", f"{quantile:.2f}th quantile latency, grouped by service"
    elif kind == "calls":
        name, help_text = "service_call_rate", "calls/sec, grouped by service"
    else:
        name = "service_error_rate"
        help_text = "error rate, computed as a fraction of errors/sec over calls/sec, grouped by service"
    if query.group_by_operation:
        name = name.replace("service", "service_operation", 1)
        help_text += " & operation"
    metrics = []
    seconds = query.rate_per_ms / 1000
    for (service, operation), series in sorted(_minute_series(rows, query).items()):
        points = []
        for point in _points(series, query, quantile if kind == "latencies" else None):
            if kind == "calls":
                value = point.calls / seconds
            elif kind == "errors":
                value = point.errors / point.calls
            else:
                value = point.latency_us / 1000
            points.append(MetricPoint(gauge_value=GaugeValue(double_value=value), timestamp=_timestamp(point.t_ms)))
        if points:
            metrics.append(Metric(labels=_labels(service, operation, query.group_by_operation), metric_points=points))
    return MetricFamily(name=name, type="GAUGE", help=help_text, metrics=metrics)
