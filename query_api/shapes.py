"""The HTTP API's request bodies and response shapes (msgspec Structs, camelCase on the wire).

Request bodies are decoded and validated at the edge with ``msgspec.json.decode(body, type=...)``: the
constraints below (ids, names, non-negative times, known enums) are checked there, and the same Structs
feed the OpenAPI document, so the document and the validation cannot drift apart.

Times in the HTTP API are milliseconds (epoch times are milliseconds since the Unix epoch); the store and
the wire format use microseconds.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from shared.analysis import Bottleneck, CriticalSegment, Dependency
from shared.archive.tiered import Tier
from shared.models import ID_PATTERN, Kind, Name, Status, StatusInput, TagValue
from shared.store.base import TraceStatus

from .errors import ID_MESSAGE, PATTERN_MESSAGES, BadRequest

MAX_EPOCH_MS: Final = 10**13
"""Largest accepted epoch time (year 2286): every time stays well inside a 64-bit microsecond count."""
MAX_DURATION_MS: Final = 10**12
"""Largest accepted duration (about 31 years), so ``now - duration`` is never before the epoch."""

_ID_RE: Final = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
TRACEPARENT_PATTERN: Final = (
    r"^(?:00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
    r"|(?!00|ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(?:-[ -~]*)?)$"
)
"""A valid W3C ``traceparent`` (what :func:`shared.propagation.parse_traceparent` accepts, in lowercase):
version 00 exactly, or a later version (not ff) with optional extra fields; ids not all zeros."""

Id = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=ID_PATTERN,
        description="An opaque id: 1..64 of [A-Za-z0-9._:-] (W3C lowercase hex recommended).",
    ),
]
TagKey = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Tags = Annotated[
    dict[TagKey, TagValue],
    msgspec.Meta(description="Key-value metadata; values are strings, numbers or booleans."),
]
EpochMsInput = Annotated[float, msgspec.Meta(ge=0, le=MAX_EPOCH_MS, description="Milliseconds since the Unix epoch.")]
DurationMsInput = Annotated[float, msgspec.Meta(ge=0, le=MAX_DURATION_MS, description="Milliseconds.")]
EpochMs = Annotated[float, msgspec.Meta(description="Milliseconds since the Unix epoch.")]
Ms = Annotated[float, msgspec.Meta(description="Milliseconds.")]
TierField = Annotated[Tier, msgspec.Meta(description="Where the trace was read: the hot store or the archive.")]
Percentage = Annotated[float, msgspec.Meta(description="Percent, 2 decimals.")]


S = TypeVar("S", bound=msgspec.Struct)


def shape_of(shape: type[S], source: msgspec.Struct, **values: Any) -> S:
    """``shape`` with ``values``, each of its other fields taken from the field of the same name of
    ``source`` (a store Struct: the API's shapes share most of their names)."""
    fields = msgspec.structs.asdict(source)
    return shape(**{name: fields[name] for name in shape.__struct_fields__ if name not in values}, **values)


def is_id(value: str) -> bool:
    """The wire format's id rule (:data:`shared.models.ID_PATTERN`), matched against the whole string."""
    return _ID_RE.fullmatch(value) is not None


def check_id(field: str, value: str | None) -> None:
    """Reject what msgspec's pattern check lets through: Python's ``$`` also matches before a final
    newline, so ``"abc\\n"`` passes ``ID_PATTERN`` with ``re.search`` but is not a valid id."""
    if value is not None and not is_id(value):
        raise BadRequest(field, ID_MESSAGE)


def check_tags(field: str, tags: dict[str, TagValue]) -> None:
    """Tag values must survive a JSON round trip: no NaN or infinity (JSON has neither)."""
    for key, value in tags.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"{field}.{key}", "must be a finite number")


# -- request bodies ----------------------------------------------------------------------------------


class StartRequest(msgspec.Struct, kw_only=True, rename="camel"):
    """Start a trace (or continue one): publishes an open span, the root unless a parent is given.

    Without ``traceId`` the trace and parent come from ``traceparent`` (this field, else the header of
    the same name), else a new trace id is made.
    """

    service_name: Name
    operation_name: Name
    trace_id: Id | None = None
    parent_span_id: Id | None = None
    tags: Tags = {}
    start_time: EpochMsInput | None = None
    kind: Kind | None = None
    traceparent: Annotated[str, msgspec.Meta(pattern=TRACEPARENT_PATTERN, description="A W3C traceparent.")] | None = (
        None
    )

    def __post_init__(self) -> None:
        check_id("traceId", self.trace_id)
        check_id("parentSpanId", self.parent_span_id)
        check_tags("tags", self.tags)
        if self.traceparent is not None and not re.fullmatch(TRACEPARENT_PATTERN, self.traceparent):
            raise BadRequest("traceparent", PATTERN_MESSAGES["traceparent"])


class LogInput(msgspec.Struct, kw_only=True, rename="camel"):
    """A timestamped event inside a span; ``timestamp`` defaults to the time the API received it."""

    timestamp: EpochMsInput | None = None
    fields: Tags = {}


class SpanRequest(msgspec.Struct, kw_only=True, rename="camel"):
    """Record a span. With ``duration`` it is complete (and, without ``startTime``, taken as just
    finished: start = now - duration); without ``duration`` it is open until finished."""

    trace_id: Id
    parent_span_id: Id | None = None
    span_id: Id | None = None
    service_name: Name
    operation_name: Name
    tags: Tags = {}
    duration: DurationMsInput | None = None
    start_time: EpochMsInput | None = None
    status: StatusInput = "success"
    kind: Kind | None = None
    logs: list[LogInput] = []

    def __post_init__(self) -> None:
        check_id("traceId", self.trace_id)
        check_id("parentSpanId", self.parent_span_id)
        check_id("spanId", self.span_id)
        check_tags("tags", self.tags)
        for i, log in enumerate(self.logs):
            check_tags(f"logs[{i}].fields", log.fields)


class FinishRequest(msgspec.Struct, kw_only=True, rename="camel"):
    """Finish an open span. Without ``traceId`` the API resolves the span's trace (404 if unknown)."""

    span_id: Id
    trace_id: Id | None = None
    status: StatusInput | None = None
    tags: Tags = {}
    end_time: EpochMsInput | None = None

    def __post_init__(self) -> None:
        check_id("spanId", self.span_id)
        check_id("traceId", self.trace_id)
        check_tags("tags", self.tags)


# -- write responses ---------------------------------------------------------------------------------


class StartResponse(msgspec.Struct, kw_only=True, rename="camel"):
    """The ids of the started span."""

    trace_id: str
    span_id: str


class SpanResponse(msgspec.Struct, kw_only=True, rename="camel"):
    """The ids of the recorded span."""

    span_id: str
    trace_id: str


class FinishResponse(msgspec.Struct, kw_only=True, rename="camel"):
    """The finished span; ``status`` is the status the finish set (null: the span keeps its own)."""

    span_id: str
    trace_id: str
    status: Status | None


# -- read responses ----------------------------------------------------------------------------------


class LogView(msgspec.Struct, kw_only=True, rename="camel"):
    """A timestamped event inside a span."""

    timestamp: EpochMs
    fields: dict[str, TagValue]


class SpanView(msgspec.Struct, kw_only=True, rename="camel"):
    """One span. ``duration`` is null while the span is open; ``parentSpanId`` is null for a root."""

    span_id: str
    parent_span_id: str | None
    service_name: str
    operation_name: str
    start_time: EpochMs
    duration: Ms | None
    status: Status
    kind: Kind | None
    tags: dict[str, TagValue]
    logs: list[LogView]


class TraceView(msgspec.Struct, kw_only=True, rename="camel"):
    """A whole trace: its root span, every other span, and what is known about its completeness."""

    trace_id: str
    root_span: SpanView | None
    spans: list[SpanView]
    service_calls: Annotated[int, msgspec.Meta(description="Number of spans in the trace.")]
    duration: Ms
    start_time: EpochMs
    status: TraceStatus
    complete: Annotated[bool, msgspec.Meta(description="A finished root span was seen.")]
    orphan_spans: Annotated[int, msgspec.Meta(description="Spans whose parent never arrived.")]
    late_spans: Annotated[int, msgspec.Meta(description="Spans that arrived after finalization.")]
    open_spans: Annotated[int, msgspec.Meta(description="Spans never finished.")]
    finalized_at: EpochMs | None
    refinalizations: int
    tier: TierField = "hot"


class TraceSummaryView(msgspec.Struct, kw_only=True, rename="camel"):
    """One search result. ``serviceName``/``operationName`` are the root span's (null when rootless)."""

    trace_id: str
    service_name: str | None
    operation_name: str | None
    start_time: EpochMs
    duration: Ms
    service_calls: int
    status: TraceStatus
    error_count: int
    services: list[str]
    complete: bool
    tier: TierField = "hot"


class VisualNode(msgspec.Struct, kw_only=True, rename="camel"):
    """A span in the visualization tree; ``startOffset`` is relative to the trace start."""

    span_id: str
    service_name: str
    operation_name: str
    duration: Ms | None
    start_offset: Ms
    status: Status
    children: list[VisualNode]  # must stay the last field: see ``encode_visualization``


class Visualization(msgspec.Struct, kw_only=True, rename="camel"):
    """The trace as a tree from its root span; ``orphans`` holds the trees of the other roots (spans whose
    parent never arrived, extra parentless spans, broken cycles). ``tree`` is null when rootless."""

    trace_id: str
    duration: Ms
    service_calls: int
    tier: TierField = "hot"
    tree: VisualNode | None
    orphans: list[VisualNode]


class AnalysisView(msgspec.Struct, kw_only=True, rename="camel"):
    """The performance analysis of a trace (precomputed at finalization; live while active)."""

    trace_id: str
    total_duration: Ms
    service_calls: int
    bottlenecks: list[Bottleneck]
    service_breakdown: Annotated[dict[str, float], msgspec.Meta(description="Self time per service, milliseconds.")]
    critical_path: Annotated[list[str], msgspec.Meta(description="service:operation, in execution order.")]
    critical_path_segments: list[CriticalSegment]
    critical_path_duration: Ms
    status: TraceStatus
    complete: bool
    orphan_spans: int
    late_spans: int
    open_spans: int
    finalized_at: EpochMs | None
    refinalizations: int
    dependencies: list[Dependency]
    tier: TierField = "hot"


class SlowTraceView(msgspec.Struct, kw_only=True, rename="camel"):
    """One of the slowest finalized traces."""

    trace_id: str
    duration: Ms


class ServiceStatsView(msgspec.Struct, kw_only=True, rename="camel"):
    """Spans of one service over finalized traces; percentiles from the latency sketch (within 1%).
    ``count`` and ``errorCount`` are the spans received; the average, the percentiles and the
    ``estimated`` counts weigh each span with its trace's adjusted count (estimates of the traffic)."""

    count: int
    avg_duration: Ms
    error_count: int
    p50: Ms
    p95: Ms
    p99: Ms
    estimated_count: Annotated[
        int, msgspec.Meta(description="Estimate: spans of the traffic (each counted with its trace's adjusted count).")
    ]
    estimated_error_count: Annotated[int, msgspec.Meta(description="Estimate: error spans of the traffic.")]


class WorkerView(msgspec.Struct, kw_only=True, rename="camel"):
    """An ingest worker's last heartbeat."""

    worker_id: str
    partitions: list[str]
    lag: Annotated[dict[str, int], msgspec.Meta(description="Consumer lag (messages) per partition.")]
    spans_per_second: float
    spans_total: int
    late_spans: int
    dead_lettered: int
    traces_finalized: int
    updated_at: EpochMs


class PipelineView(msgspec.Struct, kw_only=True, rename="camel"):
    """Ingest pipeline health from the heartbeats of the last 30 seconds."""

    workers: list[WorkerView]
    total_lag: int
    spans_per_second: float
    dead_lettered: int
    late_spans: int


class WindowView(msgspec.Struct, kw_only=True, rename="camel"):
    """The time window a read counted: traces that started in ``[start, end)``, in whole minutes (the
    rollups' grain: the window asked for is widened to the minutes it touches)."""

    start: EpochMs
    end: EpochMs


_ESTIMATED_TOTAL: Final = (
    "Estimate: traces of the traffic, each finalized trace counted with its adjusted count (1 / the probability "
    "its producer sampled it with); active traces count once."
)
_AVERAGE_DURATION: Final = "Milliseconds, over finalized traces, each weighted by its adjusted count (estimate)."


class StatsView(msgspec.Struct, kw_only=True, rename="camel"):
    """Overall statistics, from rollups (the cost does not grow with the number of stored traces): over
    all time, or over the traces that started in ``window`` (``?window=15m`` or ``?start=&end=``)."""

    total_traces: Annotated[int, msgspec.Meta(description="Traces received: active, completed and failed.")]
    active_traces: int
    completed_traces: Annotated[int, msgspec.Meta(description="Finalized traces received without failure.")]
    failed_traces: Annotated[int, msgspec.Meta(description="Finalized traces received with a failure.")]
    estimated_total_traces: Annotated[int, msgspec.Meta(description=_ESTIMATED_TOTAL)]
    estimated_completed_traces: Annotated[int, msgspec.Meta(description="Estimate: completed traces of the traffic.")]
    estimated_failed_traces: Annotated[int, msgspec.Meta(description="Estimate: failed traces of the traffic.")]
    avg_duration: Annotated[float, msgspec.Meta(description=_AVERAGE_DURATION)]
    slowest_traces: list[SlowTraceView]
    service_stats: dict[str, ServiceStatsView]
    pipeline: PipelineView
    window: WindowView | None = None


class OperationStatsView(msgspec.Struct, kw_only=True, rename="camel"):
    """Spans of one operation of a service (all its span kinds); percentiles from the latency sketch (within 1%)."""

    operation: str
    span_kinds: Annotated[list[str], msgspec.Meta(description="Span kinds seen; empty string: none set.")]
    count: int
    error_count: int
    avg_duration: Ms
    p50: Ms
    p95: Ms
    p99: Ms


class OperationStatsList(msgspec.Struct, kw_only=True, rename="camel"):
    """Per-operation statistics of one service, busiest first."""

    service_name: str
    window: WindowView | None
    operations: list[OperationStatsView]


class TimePointView(msgspec.Struct, kw_only=True, rename="camel"):
    """One step of a time series: spans that started in ``[t, t + step)``."""

    t: EpochMs
    count: int
    errors: int
    rate: Annotated[float, msgspec.Meta(description="Spans per second over the step.")]
    p50: Ms
    p95: Ms
    p99: Ms


class TimeseriesView(msgspec.Struct, kw_only=True, rename="camel"):
    """A service's (or one operation's) spans over time; steps without spans are left out."""

    step: Annotated[int, msgspec.Meta(description="Milliseconds per point.")]
    service_name: str
    operation_name: str | None
    window: WindowView
    points: list[TimePointView]


class EndpointView(msgspec.Struct, kw_only=True, rename="camel"):
    """An endpoint (root service and operation of traces) and its critical-path total."""

    service: str
    operation: str
    traces: int
    p50: Ms
    p95: Ms
    p99: Ms
    critical_path_ms: Annotated[float, msgspec.Meta(description="Sum of its traces' critical paths, ms.")]


class ContextView(msgspec.Struct, kw_only=True, rename="camel"):
    """Critical-path time of one calling context (root span down to the span that owned the time)."""

    path: list[str]
    critical_ms: Ms
    mean_ms: Annotated[float, msgspec.Meta(description="criticalMs per trace of the endpoint (or selection).")]
    share: Percentage
    traces: Annotated[int, msgspec.Meta(description="Traces whose critical path ran through this context.")]


class SelectionView(msgspec.Struct, kw_only=True, rename="camel"):
    """Which traces a tail read aggregated: the slowest ones of the endpoint in the window that lasted at
    least ``minDurationMs``, at most ``limit``. Asked by quantile (``tail=0.95``): the slowest
    ``ceil(n * (1 - tail))`` of the endpoint's ``n`` traces in the window, and ``minDurationMs`` is the
    duration of the fastest of them."""

    tail: float | None
    min_duration_ms: Ms
    limit: int
    selected: int
    truncated: Annotated[
        bool, msgspec.Meta(description="The limit was reached: more traces may have matched; the slowest were kept.")
    ]


class CriticalPathView(msgspec.Struct, kw_only=True, rename="camel"):
    """Where an endpoint's latency goes: its traces' critical paths summed per calling context, largest first."""

    endpoint: str
    traces: int
    critical_path_ms: Ms
    contexts: list[ContextView]
    window: WindowView | None
    selection: SelectionView | None
    max_depth: Annotated[
        int, msgspec.Meta(description="Contexts deeper than this keep their first labels, '…', and the last.")
    ]
    elided_contexts: int


class HotOperationView(msgspec.Struct, kw_only=True, rename="camel"):
    """An operation ranked by the critical-path time it owned across every endpoint."""

    operation: str
    critical_ms: Ms
    endpoints: int
    share: Percentage


class ChangeView(msgspec.Struct, kw_only=True, rename="camel"):
    """A calling context's mean critical time per trace of the endpoint, now and in the baseline."""

    path: list[str]
    current_mean_ms: Ms
    baseline_mean_ms: Ms
    delta_ms: Ms
    current_share: Percentage
    baseline_share: Percentage


class ChangesView(msgspec.Struct, kw_only=True, rename="camel"):
    """The contexts whose mean critical time per trace grew most against the baseline window (just before
    the current one)."""

    endpoint: str
    window: WindowView
    baseline: WindowView
    current_traces: int
    baseline_traces: int
    changes: list[ChangeView]


class Health(msgspec.Struct, kw_only=True):
    """The store answers."""

    status: Literal["ok"]


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error answer; a 400 names the bad parameter or field first (``minDuration: ...``)."""

    error: str
