"""The store contract: the roles a backend plays (writer, finalizer, readers), the capabilities it
declares, and the Structs they speak. :class:`TraceStore` is the full store, every role at once.

The store is the source of truth. Workers' in-memory state is an optimisation that can be lost at any
time; everything needed to finish a trace's life (its spans, its state, its due time) is here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal, Protocol

import msgspec

from shared.analysis import Dependency, TraceAnalysis
from shared.models import Span, SpanFinish
from shared.sampling import Sampler
from shared.store.cache import TraceCache
from shared.store.rollups import Contribution
from shared.store.sketch import Bins, quantile, quantiles, summed_many, unpack

TraceLifecycle = Literal["active", "finalized", "dropped"]
"""Where a stored trace is in its life: written to, finalized, or dropped by the sampler."""
TraceStatus = Literal["active", "completed", "failed"]


class QueryError(ValueError):
    """A query parameter is invalid; ``param`` names it as the HTTP API spells it (the API answers 400)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class TraceQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A trace search. Validates itself when built: a bad value raises :class:`QueryError` naming it.

    All filters are ANDed. Results are newest first (by trace start). Durations and times in µs.

    Two meanings, as the two APIs that search define them:

    * ``same_span=False`` (the seed's ``/traces/query``): trace-level. ``service_name`` /
      ``operation_name``: some span of the trace has that service (and that operation, in the same span);
      each ``tags`` pair is on some span; ``min``/``max_duration_us`` bound the trace's duration.
    * ``same_span=True`` (Jaeger's ``/api/traces``, as Jaeger's stores match): one span of the trace must
      have the service, the operation, every tag, and a duration within the bounds, all at once.

    ``start_us``/``end_us`` bound the trace's start in both.
    """

    service_name: str | None = None
    operation_name: str | None = None
    min_duration_us: int | None = None
    max_duration_us: int | None = None
    status: TraceStatus | None = None
    tags: tuple[tuple[str, str], ...] = ()
    start_us: int | None = None
    end_us: int | None = None
    limit: int = 20
    offset: int = 0
    same_span: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= 1000:
            raise QueryError("limit", "must be between 1 and 1000")
        if self.offset < 0:
            raise QueryError("offset", "must be >= 0")
        for name, param in (
            ("min_duration_us", "minDuration"),
            ("max_duration_us", "maxDuration"),
            ("start_us", "start"),
            ("end_us", "end"),
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise QueryError(param, "must be >= 0")
        if (
            self.min_duration_us is not None
            and self.max_duration_us is not None
            and self.min_duration_us > self.max_duration_us
        ):
            raise QueryError("maxDuration", "must be >= minDuration")
        if self.start_us is not None and self.end_us is not None and self.start_us > self.end_us:
            raise QueryError("end", "must be >= start")
        if self.operation_name is not None and self.operation_name == "":
            raise QueryError("operationName", "must not be empty")
        if self.service_name is not None and self.service_name == "":
            raise QueryError("serviceName", "must not be empty")


class TraceSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One row of a search result. ``status`` is ``active`` until the trace is finalized."""

    trace_id: str
    root_service: str | None
    root_operation: str | None
    start_us: int
    duration_us: int
    span_count: int
    error_count: int
    status: TraceStatus
    complete: bool
    services: list[str]


class Completeness(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What the store knows about how whole a trace is (beyond what the analysis sees)."""

    late_spans: int = 0  # spans that arrived after the trace was finalized
    refinalizations: int = 0
    finalized_at_us: int | None = None


class StoredTrace(msgspec.Struct, frozen=True, kw_only=True):
    """A trace as stored: its spans (finish events merged), state, and the analysis once finalized."""

    trace_id: str
    state: TraceLifecycle
    spans: list[Span]
    analysis: TraceAnalysis | None  # None while active
    completeness: Completeness


class WriteResult(msgspec.Struct, frozen=True, kw_only=True):
    spans_changed: int  # span rows inserted or changed (duplicates excluded)
    traces_touched: int
    late_spans: int  # changed spans of traces that were already finalized


class ServiceStats(msgspec.Struct, frozen=True, kw_only=True):
    """Rollup over the spans of one service in finalized traces."""

    count: int
    error_count: int
    total_duration_us: int
    bins: dict[int, int] = msgspec.field(default_factory=dict)
    """The latency sketch of the spans: bin -> count (:mod:`shared.store.sketch`)."""

    def percentile_us(self, q: float) -> float:
        """The q-quantile (0..1) in µs: within 1% of the exact value at its rank
        (:func:`~shared.store.sketch.quantile`)."""
        return quantile(self.bins, q)

    def percentiles_us(self, qs: Sequence[float]) -> list[float]:
        """:meth:`percentile_us` of each of ``qs`` (ascending), the sketch walked once."""
        return quantiles(self.bins, qs)


class SlowTrace(msgspec.Struct, frozen=True, kw_only=True):
    trace_id: str
    duration_us: int


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """A time window ``[start_us, end_us)`` of trace start times, in µs since the epoch.

    Rollups are kept per minute, so a store counts the traces of every minute the window touches: the
    start is rounded down and the end up to whole minutes (:meth:`aligned`), and answers say which window
    they counted."""

    start_us: int
    end_us: int

    def __post_init__(self) -> None:
        if self.start_us < 0:
            raise QueryError("start", "must be >= 0")
        if self.end_us <= self.start_us:
            raise QueryError("end", "must be after start")

    def aligned(self, grain_us: int = 60_000_000) -> Window:
        start = self.start_us - self.start_us % grain_us
        end = -(-self.end_us // grain_us) * grain_us
        return Window(start_us=start, end_us=end)


class RollupRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One rollup series' sums over one step of a window (or the whole window / all time).

    ``key``: ``(service, operation, span kind or "")`` for the operations series, ``(root service, root
    operation)`` for the endpoints series (``("", "")``: traces without a root). ``count`` spans or traces,
    ``errors`` of them with an error, ``duration_us`` their durations' sum, ``sketch`` their latency sketch
    packed as a store keeps it (:func:`shared.store.sketch.pack`), so that reads of many rows sum them at
    once (:func:`~shared.store.sketch.summed_packed`)."""

    t_us: int
    key: tuple[str, ...]
    count: int
    errors: int
    duration_us: int
    sketch: bytes = b""

    @property
    def bins(self) -> Bins:
        """The latency sketch as bins."""
        return unpack(self.sketch)

    def stats(self) -> ServiceStats:
        return ServiceStats(
            count=self.count, error_count=self.errors, total_duration_us=self.duration_us, bins=self.bins
        )


def merged_stats_many(groups: Sequence[Sequence[RollupRow]]) -> list[ServiceStats]:
    """The sum of each group of rollup rows as one :class:`ServiceStats` (counts, errors, durations,
    sketch), the groups' sketches summed at once (:func:`~shared.store.sketch.summed_many`)."""
    sketches = summed_many([([r.sketch for r in rows], ()) for rows in groups])
    return [
        ServiceStats(
            count=sum(r.count for r in rows),
            error_count=sum(r.errors for r in rows),
            total_duration_us=sum(r.duration_us for r in rows),
            bins=unpack(sketch),
        )
        for rows, sketch in zip(groups, sketches, strict=True)
    ]


class ContextRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Critical-path time of one calling context of one endpoint, summed over traces (see
    :mod:`shared.critical_paths`)."""

    endpoint: tuple[str, str]
    """(root service, root operation)."""
    path: tuple[str, ...]
    """``service:operation`` labels from the root span down to the span that owned the time."""
    critical_us: int
    traces: int
    """Traces whose critical path ran through this context."""


class TailContexts(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The critical paths of an endpoint's slowest traces, summed per calling context."""

    traces: int
    """How many traces were summed."""
    min_duration_us: int | None
    """The duration of the fastest of them (``None`` when there were none)."""
    contexts: list[ContextRow]
    """Largest first; ``traces`` of a row counts the summed traces that had the context."""


class Unseen(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the adjusted counts add beyond the traces and spans received, for one service (see
    :mod:`shared.store.rollups`): traces (counted under their root service) and failed traces, spans and
    error spans. Received = estimated - unseen."""

    traces: int = 0
    failed: int = 0
    spans: int = 0
    errors: int = 0


class StoreStats(msgspec.Struct, frozen=True, kw_only=True):
    """Aggregates served by ``/stats``; every number comes from rollups (O(1) in stored traces), over all
    time or over the traces that started in ``window`` (the minute-aligned window actually counted).

    ``completed_traces`` and ``failed_traces`` count the finalized traces received; the ``estimated_``
    ones count each with its adjusted count (:mod:`shared.adjusted_counts`), as every rollup does:
    ``total_duration_us`` and ``services`` are such estimates, and ``unseen`` (per service) tells how much
    of them was not received."""

    active_traces: int
    completed_traces: int
    failed_traces: int
    estimated_completed_traces: int
    estimated_failed_traces: int
    total_duration_us: int  # sum over finalized traces, each counted with its adjusted count
    slowest: list[SlowTrace]
    services: dict[str, ServiceStats]
    unseen: dict[str, Unseen] = {}
    window: Window | None = None

    @property
    def total_traces(self) -> int:
        return self.active_traces + self.completed_traces + self.failed_traces

    @property
    def estimated_total_traces(self) -> int:
        """Active traces (their adjusted counts are known at finalization: counted once) and the estimated
        finalized ones."""
        return self.active_traces + self.estimated_completed_traces + self.estimated_failed_traces


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A worker's health record, written every few seconds."""

    worker_id: str
    partitions: list[str]
    lag: dict[str, int]
    spans_per_second: float
    spans_total: int
    late_spans: int
    dead_lettered: int
    traces_finalized: int
    updated_at_us: int


class StoreCapabilities(Protocol):
    """What a backend declares about itself, read by the ingest worker as plain attributes."""

    cache: TraceCache | None
    """The writer's copy of the traces it writes (:class:`~shared.store.cache.TraceCache`, see
    docs/adr/0004-trace-cache.md), or ``None`` (a store opened for reading, or with ``TRACING_CACHE_MB=0``)."""
    shared_by_processes: bool
    """Whether another process may open the same store and finalize for this one's worker (the finalizer
    process, docs/adr/0003-finalizer-process.md). ``False``: finalization stays in the worker."""
    concurrent_finalizes: int
    """How many :meth:`TraceFinalizer.finalize` calls a finalizer process may run at once on disjoint
    shares of one round's traces (at least 1)."""
    purge_by_owner: bool
    """Whether a purge corrects rows that only a shard's owner writes (rollup rows with one writer per
    shard): then a worker purges under :attr:`ingest.ownership.Ownership.finalizing`, never beside the next
    owner's finalize round. ``False`` (the SQL stores, whose transactions let any process correct any
    rollup row): a purge runs beside the finalize rounds, one transaction at a time."""


class Component(Protocol):
    """What every part of a store has: a health check and a close."""

    async def check(self) -> None:
        """Raise if the store cannot answer."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the store answers nothing afterwards."""
        ...


class TraceWriter(Protocol):
    """The write role: one method. Writes are idempotent: re-delivering a batch changes nothing; a span is
    keyed by (trace_id, span_id)."""

    cache: TraceCache | None
    """The copy of the traces this process wrote, finalized from it without a read-back (a worker's
    store); ``None`` when it keeps none."""
    shared_by_processes: bool
    """Whether another process can open the same store (a worker's finalizer process)."""
    concurrent_finalizes: int
    """How many ``finalize`` calls on disjoint traces a finalizer process may run at once (at least 1)."""

    async def write_batch(
        self,
        spans: Sequence[Span],
        finishes: Sequence[SpanFinish],
        *,
        shards: Mapping[str, str],
        now_us: int,
        grace_us: int,
        idle_us: int,
    ) -> WriteResult:
        """Upsert spans and finish events and touch their traces' rows in ONE transaction.

        A span whose stored content is identical is a no-op. ``shards`` maps every trace id of the batch
        to its shard (e.g. ``"spans/3"``: a topic partition; the worker names the partition the trace is
        keyed to, so that every worker names the same one); a trace seen for the first time is owned by
        that shard, whose worker will finalize it. Due time: once a root
        span (no parent) has a duration, ``min(due, now + grace)``; before that ``now + idle`` (sliding).
        A changed span of a finalized trace is late: the trace becomes active again, due ``now + grace``.
        """
        ...


class TraceFinalizer(Protocol):
    """The finalize role: which traces are due, finalizing them, and purging old ones."""

    async def due_traces(self, shards: Collection[str], now_us: int, limit: int) -> list[str]:
        """Ids of active traces owned by ``shards`` whose due time is <= ``now_us``, earliest due first."""
        ...

    async def finalize(
        self,
        trace_ids: Sequence[str],
        *,
        now_us: int,
        sampler: Sampler | None = None,
        on_first: Callable[[Sequence[Contribution]], None] | None = None,
    ) -> list[TraceAnalysis]:
        """Analyze each still-active trace from its stored spans; store the summary, analysis and indexes,
        and correct the rollups (subtract a previous finalization's contribution, add the new one), all in
        one transaction. Traces no longer active are skipped. Returns the analyses written.

        ``on_first``: called once the transaction committed, with the contributions of the traces
        finalized for the first time (for counters that cannot go back, such as Prometheus span metrics).

        A trace the ``sampler`` does not keep still adds its contribution to the rollups, but its spans
        and index rows are deleted and it becomes ``dropped``: not found, not searched, and spans written
        for it later are discarded."""
        ...

    async def purge(self, before_us: int, *, shards: Collection[str] | None = None) -> int:
        """Delete finalized traces that started before ``before_us`` (rollups corrected); returns count.

        ``shards``: the caller's shards (a worker's partitions). A backend whose rollup rows have one writer
        per shard purges only the traces of these shards; the SQL backends, whose transactions let any
        process correct any rollup row, purge every old trace whatever is passed."""
        ...


class TraceReader(Protocol):
    """Reads of traces: one by id, searches, and the open span index."""

    async def get_trace(self, trace_id: str) -> StoredTrace | None:
        """The trace, or ``None`` if no span of it is stored."""
        ...

    async def find_traces(self, query: TraceQuery) -> list[TraceSummary]:
        """Summaries of traces matching ``query``, newest first. ``status=active`` finds unfinalized ones;
        other filters apply to finalized traces."""
        ...

    async def trace_of_span(self, span_id: str) -> str | None:
        """The trace id of a stored OPEN span (no duration, no finish event yet), or ``None``. Only open
        spans are indexed by span id: they are what a finish by span id alone can close. If several
        traces have an open span of that id, any one of them."""
        ...


class ServiceNames(Protocol):
    """Names seen in finalized traces, for search forms."""

    async def services(self) -> list[str]:
        """Service names seen in finalized traces, sorted."""
        ...

    async def operations(self, service: str) -> list[str]:
        """Operation names of ``service`` in finalized traces, sorted."""
        ...

    async def operation_kinds(self, service: str) -> list[tuple[str, str]]:
        """(operation, span kind or "") pairs seen for ``service`` in finalized traces, sorted."""
        ...


class AggregateReader(Protocol):
    """Reads of the rollups: counts, latencies, critical paths and dependencies over time windows."""

    async def stats(self, *, slowest: int = 5, window: Window | None = None) -> StoreStats:
        """All-time aggregates, or those of the traces that started in ``window`` (minute-aligned)."""
        ...

    async def rollups(
        self,
        series: Literal["operations", "endpoints"],
        window: Window | None,
        *,
        step_us: int | None = None,
        service: str | None = None,
        operation: str | None = None,
        sketch: bool = True,
    ) -> list[RollupRow]:
        """Rollup sums per key, optionally filtered by service (root service for endpoints) and
        operation: over all time (``window`` None), over the whole minute-aligned window (``step_us``
        None), or per step (``step_us`` a multiple of a minute; ``t_us`` = the step's start). Steps and keys
        without data are left out. Costs O(buckets in the window x keys), never O(traces). ``sketch``
        False: the counters alone, every row's ``bins`` empty (a read that needs no percentile skips the
        sketch's rows, a row per key and bin)."""
        ...

    async def critical_contexts(
        self, window: Window | None, *, service: str | None = None, operation: str | None = None
    ) -> list[ContextRow]:
        """Critical-path time per endpoint (optionally one: root ``service`` and ``operation``) and calling
        context, over all time or the traces that started in the minute-aligned ``window``; from the
        rollups: O(buckets x contexts), never O(traces). Largest first."""
        ...

    async def slow_trace_contexts(
        self, service: str, operation: str, window: Window | None, *, min_duration_us: int, limit: int
    ) -> TailContexts:
        """The critical paths, summed per calling context, of the ``limit`` slowest finalized traces of the
        endpoint (root ``service`` and ``operation``) that lasted at least ``min_duration_us`` and started in
        the minute-aligned ``window`` (ties at the limit broken by trace id). Costs O(the traces summed)."""
        ...

    async def dependencies(self, since_us: int = 0, until_us: int | None = None) -> list[Dependency]:
        """Parent service → child service call counts over traces that started in the window (hour grain)."""
        ...


class ArchivedBlock(msgspec.Struct, frozen=True, kw_only=True):
    """A block registered in the hot store: what reads need to find it without listing the bucket."""

    name: str
    """Its object name (:func:`shared.archive.block.block_name`)."""
    shard: str
    """The shard (as the store names shards, e.g. ``topic/3``) whose owner wrote it."""
    start_us: int
    """Earliest trace start in it."""
    end_us: int
    """Latest trace start in it."""
    created_us: int
    """When its traces were read from the hot store: a trace finalized again since stays hot."""
    meta: bytes
    """:func:`shared.archive.block.encode_meta` of its ``BlockMeta``: decoded by readers, opaque to stores."""


class ArchiveRegistry(Protocol):
    """The hot store's side of the archive: what is due to move, the registered blocks, the pins."""

    async def archive_due(self, before_us: int, *, shard: str, limit: int) -> list[StoredTrace]:
        """Up to ``limit`` finalized traces of ``shard`` that started before ``before_us``, oldest first, with
        their spans and analysis (as get_trace answers): what the mover writes into one block."""
        ...

    async def register_block(self, block: ArchivedBlock, trace_ids: Sequence[str]) -> None:
        """Register ``block`` and remove the hot rows of ``trace_ids`` (traces, chunks, search/endpoint index
        rows) WITHOUT taking them out of the rollups (they stay counted: they moved, they were not
        deleted). One transaction on the SQL stores; on Cassandra the registration is written first.
        Idempotent. A trace no longer finalized, or finalized again after ``block.created_us``, keeps its
        hot rows (it is then in both tiers; reads answer the hot copy)."""
        ...

    async def archived_blocks(self, *, start_us: int | None = None, end_us: int | None = None) -> list[ArchivedBlock]:
        """The registered blocks whose [start_us, end_us] overlaps the window (all when None), by start."""
        ...

    async def drop_blocks(self, names: Sequence[str]) -> None:
        """Unregister these blocks (retention; their objects are deleted after this)."""
        ...

    async def pin_trace(self, trace_id: str) -> None:
        """Jaeger's archive button: no retention deletes this trace (hot purge skips it; archive retention
        keeps a block holding a pinned trace)."""
        ...

    async def pinned_traces(self) -> set[str]:
        """The pinned trace ids."""
        ...


class HeartbeatLog(Protocol):
    """Workers' health records."""

    async def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        """Store the worker's record, replacing its previous one."""
        ...

    async def heartbeats(self, *, newer_than_us: int = 0) -> list[Heartbeat]:
        """The records updated after ``newer_than_us``, by worker id."""
        ...


class TraceStore(
    StoreCapabilities,
    Component,
    TraceWriter,
    TraceFinalizer,
    TraceReader,
    ServiceNames,
    AggregateReader,
    HeartbeatLog,
    ArchiveRegistry,
    Protocol,
):
    """The full store: every role at once, as :func:`shared.store.open_store` returns it. Every method is
    safe to call from many workers and API replicas at once."""
