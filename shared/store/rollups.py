"""What one finalized trace adds to the rollups and to the search indexes, so that every backend can add
it once and take it out exactly on re-finalization or purge (never double counted). Pure: no I/O.

Rollups are time-bucketed by the trace's start time, at grains kept side by side:

* ``MINUTE``: one bucket per minute (bucket = start µs // 60 s), for windows and time series;
* ``TEN``: one bucket per ten minutes (SQLite and PostgreSQL only, :data:`SQL_GRAINS`), so that the edge
  of a window is a few rows whatever minute it starts at (docs/adr/0018-ten-minute-grain.md);
* ``HOUR``: one bucket per hour, so long windows read 60x fewer rows;
* ``TOTAL``: one bucket (0) for all time, so ``/stats`` without a window reads a handful of rows.

A trace's contribution goes to the bucket of its start at each grain; the ten-minute, hour and total rows
are sums of the minute rows, written in the same transaction, so the grains never disagree (windows are
read from a coarser row less finer ones: :func:`shared.store.search.signed_window_ranges`). Cassandra reads
plain ranges and keeps :data:`PLAIN_GRAINS`. The grain numbers are stored: never renumbered.

Series:

* **operations**, per (service, operation, span kind): spans, error spans, duration sum, the latency
  histogram of the spans (fixed bounds :data:`~shared.store.buckets.BUCKET_BOUNDS_US`), and their latency
  sketch (:mod:`shared.store.sketch`) as rows per (service, operation, kind, bin);
* **endpoints**, per (root service, root operation): traces, failed traces, trace duration sum, histogram
  and sketch. Rootless traces count under the endpoint ``("", "")``.
* **dependencies**, per hour and (parent service, child service): calls and error calls (summed per
  minute, so that a backend can keep every grain);
* **critical paths**, per (root service, root operation, calling context): critical-path time and the
  traces the context was on the critical path of (:mod:`shared.critical_paths`);
* **unseen**, per service: what the adjusted counts add beyond the received traces and spans (below).

Every series counts a trace with its adjusted count (:mod:`shared.adjusted_counts`: 1 / the probability
its producer sampled it with, an integer), so that its counts, sums and histograms estimate the real
traffic: a trace of adjusted count 4 adds 4 traces, 4 times each of its spans, 4 times its duration,
4 observations of each latency to the fixed buckets and to the sketch bins (so the percentiles are of the
traffic as well).
The **unseen** series keeps the excess (adjusted count - 1) of every trace: per service, traces (under
the trace's root service; a rootless trace under the service of its first span row) and failed traces,
spans and error spans. What was received is the estimate minus the unseen; a trace without sampler
information has adjusted count 1 and no unseen row, so rollups written before adjusted counts existed
need no migration.

Why rollups kept at write time: docs/adr/0010-rollups.md.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeVar

import msgspec

from shared.adjusted_counts import trace_adjusted_count
from shared.analysis import SPAN_LAYOUT, TraceAnalysis, core
from shared.critical_paths import Path, context_id, trace_contexts
from shared.models import Span, flat_tags
from shared.store.buckets import BUCKET_BOUNDS_US
from shared.store.encoding import pack_blob, unpack_blob
from shared.store.sketch import LEGACY_BINS, Bins, add_to, key_of, pack, split_key

MINUTE_US: Final = 60_000_000
TEN_MINUTES_US: Final = 600_000_000
HOUR_US: Final = 3_600_000_000
MINUTE: Final = 1
HOUR: Final = 2
TOTAL: Final = 3
TEN: Final = 4
"""Ten minutes (numbered after the others: grains are stored, never renumbered)."""
GRAIN_US: Final = {MINUTE: MINUTE_US, TEN: TEN_MINUTES_US, HOUR: HOUR_US}
PLAIN_GRAINS: Final = (MINUTE, HOUR, TOTAL)
"""The grains a store that reads plain ranges keeps (Cassandra: :func:`shared.store.search.window_ranges`)."""
SQL_GRAINS: Final = (MINUTE, TEN, HOUR, TOTAL)
"""The grains the SQL stores keep: the plain ones and ten minutes, which their signed window reads use
(:func:`shared.store.search.signed_window_ranges`)."""
HISTOGRAM_SIZE: Final = len(BUCKET_BOUNDS_US) + 1

OpShare = tuple[str, str, str, int, int, int, int, int, dict[int, int], int, dict[int, int]]
"""(service, operation, kind, spans, error spans, duration µs, min span µs, max span µs, histogram,
error spans' duration µs, error spans' histogram): one trace's spans of one (service, operation, kind)."""
ContextKey = tuple[str, str, int]
"""(root service, root operation, calling context id)."""
OpKey = tuple[str, str, str]
"""(service, operation, span kind or "")."""
EndpointKey = tuple[str, str]
"""(root service, root operation); ("", "") for rootless traces."""
OpBinKey = tuple[str, str, str, int]
"""(service, operation, span kind or "", sketch bin)."""
EndpointBinKey = tuple[str, str, int]
"""(root service, root operation, sketch bin)."""


class Contribution(msgspec.Struct, frozen=True, kw_only=True, array_like=True, gc=False):
    """One trace's share of every rollup and its search index entries. Stored with the trace (msgpack)
    and subtracted before it is replaced, or when the trace is purged."""

    start_us: int
    failed: bool
    duration_us: int
    endpoint: EndpointKey
    ops: list[OpShare]
    """Per (service, operation, kind) of its spans: counts, durations and histograms (:data:`OpShare`,
    keyed by :func:`shared.store.sketch.key_of`, or by fixed bucket alone when not :attr:`sketched`)."""
    deps: list[tuple[str, str, int, int]]
    """(parent service, child service, calls, errors)."""
    tags: list[tuple[str, str]]
    """Distinct (key, value text) pairs of the trace's span tags, resource attributes, scope and log
    fields: its rows in the tag index."""
    contexts: list[tuple[int, int]]
    """(calling context id, critical-path µs) of the trace's critical path."""
    sketched: bool = False
    """Whether its histograms carry sketch bins; False: stored before the sketch, fixed buckets alone
    (counted at their midpoints, as the rollups of then were converted)."""
    weight: int = 1
    """The trace's adjusted count (>= 1): how many traces of the traffic it stands for. Every rollup adds
    the rest of the contribution this many times; 1 in contributions stored before it existed."""

    def index_ops(self) -> list[tuple[str, str, int, int]]:
        """The trace's rows in the (service, operation) search index: one per (service, operation) and one
        per service (operation ``""``), each with the smallest and largest duration of those spans
        (:func:`shared.analysis_core.op_index`, compiled when built)."""
        return core.op_index(self.ops)


def bucket_of(duration_us: int) -> int:
    """The latency histogram bucket of a duration: the first bound >= it, else the open-ended one."""
    return bisect.bisect_left(BUCKET_BOUNDS_US, duration_us)


def contribution(
    analysis: TraceAnalysis, spans: Sequence[Span], paths: dict[int, Path] | None = None, *, tags: bool = True
) -> Contribution:
    """One pass over the spans (a hot loop at finalization: :func:`shared.analysis_core.span_shares`,
    compiled when built). The calling contexts of the critical path are added to ``paths`` (id -> labels)
    when given. Without ``tags``, :attr:`Contribution.tags` is left empty: a share that is only taken out
    of the rollups (a purge) needs none, and the tag pass is a third of the loop."""
    ops, pairs = core.span_shares(spans, SPAN_LAYOUT, _BOUNDS, flat_tags, tags)
    return Contribution(
        start_us=analysis.start_us,
        failed=analysis.failed,
        duration_us=analysis.duration_us,
        endpoint=(analysis.root_service or "", analysis.root_operation or ""),
        ops=ops,
        deps=[(d.parent, d.child, d.calls, d.errors) for d in analysis.dependencies],
        tags=pairs,
        contexts=_context_shares(analysis, spans, paths),
        sketched=True,
        weight=trace_adjusted_count(analysis.trace_id, spans),
    )


_BOUNDS: Final = list(BUCKET_BOUNDS_US)


def _context_shares(
    analysis: TraceAnalysis, spans: Sequence[Span], paths: dict[int, Path] | None
) -> list[tuple[int, int]]:
    shares: list[tuple[int, int]] = []
    for path, critical_us in trace_contexts(analysis, spans).items():
        ctx = _context_ids.get(path)
        if ctx is None:
            ctx = context_id(path)
            if len(_context_ids) < CONTEXT_IDS_CACHED:
                _context_ids[path] = ctx
        if paths is not None:
            paths[ctx] = path
        shares.append((ctx, critical_us))
    return shares


_context_ids: dict[Path, int] = {}
"""Ids of the contexts seen (hashing a path costs more than looking it up)."""
CONTEXT_IDS_CACHED: Final = 10_000
"""At most this many (a context is at most 32 labels of 513 characters: bounded in bytes too)."""


Counters = list[int]
"""[count, errors, duration µs, h0 .. h18]: one rollup row's values."""


COUNTERS: Final = 3 + HISTOGRAM_SIZE
UNSEEN_VALUES: Final = ("traces", "failed", "spans", "errors")
"""The values of an unseen row (see the module docstring); ``spans`` > 0 exactly while it counts anything."""
UNSEEN_LIVE: Final = 2


def _counters() -> Counters:
    return [0] * COUNTERS


class RollupDelta:
    """The sum of many contributions, each added (+1) or subtracted (-1), as rows ready for one upsert
    per table. Minute rows are summed as contributions come; hour and total rows derive from them."""

    def __init__(self) -> None:
        self.completed = 0
        self.failed = 0
        self.duration_us = 0
        self.ops: dict[tuple[int, OpKey], Counters] = {}  # (minute, (service, operation, kind))
        self.endpoints: dict[tuple[int, EndpointKey], Counters] = {}  # (minute, (service, operation))
        self.deps: dict[tuple[int, tuple[str, str]], list[int]] = {}  # (minute, (parent, child)) -> [calls, errors]
        self.contexts: dict[tuple[int, ContextKey], list[int]] = {}  # (minute, key) -> [critical µs, traces]
        self.op_bins: dict[tuple[int, OpBinKey], list[int]] = {}  # (minute, (service, operation, kind, bin)) -> [n]
        self.endpoint_bins: dict[tuple[int, EndpointBinKey], list[int]] = {}  # (minute, (..., bin)) -> [n]
        self.unseen: dict[tuple[int, tuple[str]], list[int]] = {}  # (minute, (service,)) -> UNSEEN_VALUES

    def __bool__(self) -> bool:
        return bool(
            self.completed or self.failed or self.ops or self.endpoints or self.deps or self.contexts or self.unseen
        )

    def add(self, c: Contribution, sign: int) -> None:
        """Add (``sign`` +1) or take out (-1) one contribution: received traces once, every series with
        the trace's adjusted count."""
        if c.failed:
            self.failed += sign
        else:
            self.completed += sign
        self.duration_us += sign * c.duration_us
        minute = c.start_us // MINUTE_US
        weighted = sign * c.weight
        core.add_op_shares(self.ops, self.op_bins, minute, c.ops, weighted, COUNTERS, LEGACY_BINS)  # compiled
        self._add_endpoint(c, minute, weighted)
        contexts = self.contexts
        for ctx, critical_us in c.contexts:
            ckey = (minute, (*c.endpoint, ctx))
            crow = contexts.get(ckey)
            if crow is None:
                crow = contexts[ckey] = [0, 0]
            crow[0] += weighted * critical_us
            crow[1] += weighted
        for parent, child, calls, errors in c.deps:
            dkey = (minute, (parent, child))
            dep = self.deps.get(dkey)
            if dep is None:
                dep = self.deps[dkey] = [0, 0]
            dep[0] += weighted * calls
            dep[1] += weighted * errors
        if c.weight != 1 and c.ops:
            self._add_unseen(c, minute, sign * (c.weight - 1))

    def _add_endpoint(self, c: Contribution, minute: int, weighted: int) -> None:
        """The trace itself, ``weighted`` times, in its endpoint's counters and sketch."""
        ekey = (minute, c.endpoint)
        erow = self.endpoints.get(ekey)
        if erow is None:
            erow = self.endpoints[ekey] = _counters()
        erow[0] += weighted
        erow[1] += weighted * c.failed
        erow[2] += weighted * c.duration_us
        bucket, index = split_key(key_of(c.duration_us) if c.sketched else bucket_of(c.duration_us))
        erow[3 + bucket] += weighted
        bkey = (minute, (*c.endpoint, index))
        brow = self.endpoint_bins.get(bkey)
        if brow is None:
            self.endpoint_bins[bkey] = [weighted]
        else:
            brow[0] += weighted

    def _add_unseen(self, c: Contribution, minute: int, extra: int) -> None:
        """The excess of a trace's adjusted count over 1, ``extra`` times each of its traces and spans."""
        unseen = self.unseen
        own = c.endpoint[0] or c.ops[0][0]
        for service, _, _, spans, errors, *_ in c.ops:
            row = unseen.get((minute, (service,)))
            if row is None:
                row = unseen[(minute, (service,))] = [0, 0, 0, 0]
            row[2] += extra * spans
            row[3] += extra * errors
        row = unseen[(minute, (own,))]  # the root's service has spans: its row exists
        row[0] += extra
        row[1] += extra * c.failed

    def op_rows(self, grains: Sequence[int] = SQL_GRAINS) -> list[tuple[int, int, OpKey, Counters]]:
        """``(grain, bucket, (service, operation, kind), counters)`` at each of ``grains`` (the SQL stores'
        by default), non-zero rows only, in key order (concurrent writers lock shared rows in the same
        order)."""
        return _grains(self.ops, grains)

    def endpoint_rows(self, grains: Sequence[int] = SQL_GRAINS) -> list[tuple[int, int, EndpointKey, Counters]]:
        """``(grain, bucket, (root service, root operation), counters)``, as :meth:`op_rows`."""
        return _grains(self.endpoints, grains)

    def op_bin_rows(self, grains: Sequence[int] = SQL_GRAINS) -> list[tuple[int, int, OpBinKey, list[int]]]:
        """``(grain, bucket, (service, operation, kind, bin), [count])``: the operations' sketches, as
        :meth:`op_rows`."""
        return _grains(self.op_bins, grains)

    def service_bin_rows(self) -> list[tuple[str, int, int]]:
        """``(service, bin, count)``: the all-time sketch of each service's spans (every operation and
        kind summed), non-zero rows only, in key order: what ``/stats`` reads without a window."""
        sums: dict[tuple[str, int], int] = {}
        for (_, (service, _operation, _kind, index)), (n,) in self.op_bins.items():
            sums[service, index] = sums.get((service, index), 0) + n
        return sorted((service, index, n) for (service, index), n in sums.items() if n)

    def endpoint_bin_rows(self, grains: Sequence[int] = SQL_GRAINS) -> list[tuple[int, int, EndpointBinKey, list[int]]]:
        """``(grain, bucket, (root service, root operation, bin), [count])``: the endpoints' sketches."""
        return _grains(self.endpoint_bins, grains)

    def context_rows(self, grains: Sequence[int] = SQL_GRAINS) -> list[tuple[int, int, ContextKey, list[int]]]:
        """``(grain, bucket, (root service, root operation, context id), [critical µs, traces])``."""
        return _grains(self.contexts, grains)

    def unseen_rows(self, grains: Sequence[int] = SQL_GRAINS) -> list[tuple[int, int, tuple[str], list[int]]]:
        """``(grain, bucket, (service,), [traces, failed, spans, errors])``, as :meth:`op_rows`."""
        return _grains(self.unseen, grains)

    def dep_rows(self) -> list[tuple[int, str, str, int, int]]:
        """``(hour, parent, child, calls, errors)``, non-zero rows only, in key order."""
        hours: dict[tuple[int, str, str], list[int]] = {}
        for (minute, (parent, child)), (calls, errors) in self.deps.items():
            row = hours.setdefault((minute * MINUTE_US // HOUR_US, parent, child), [0, 0])
            row[0] += calls
            row[1] += errors
        return sorted((h, p, c, v[0], v[1]) for (h, p, c), v in hours.items() if any(v))

    def op_sketch_rows(self, grains: Sequence[int] = SQL_GRAINS) -> list[tuple[int, int, OpKey, Counters, bytes]]:
        """:meth:`op_rows` with each row's sketch delta packed (:func:`~shared.store.sketch.pack`), a key with
        bins and no counters (they summed to 0) as a row of zeros: what a store that keeps a sketch a row
        (SQLite, PostgreSQL) upserts. The same rows as joining :meth:`op_rows` and :meth:`op_bin_rows`,
        derived in one pass (:func:`_sketch_grains`)."""
        return _sketch_grains(self.ops, self.op_bins, grains)

    def endpoint_sketch_rows(
        self, grains: Sequence[int] = SQL_GRAINS
    ) -> list[tuple[int, int, EndpointKey, Counters, bytes]]:
        """:meth:`endpoint_rows` with each row's sketch delta packed, as :meth:`op_sketch_rows`."""
        return _sketch_grains(self.endpoints, self.endpoint_bins, grains)

    def service_sketch_rows(self) -> list[tuple[str, bytes]]:
        """``(service, packed sketch delta)`` of :meth:`service_bin_rows`, in service order."""
        by_service: dict[str, list[tuple[int, int]]] = {}
        for service, index, n in self.service_bin_rows():
            by_service.setdefault(service, []).append((index, n))
        return [(service, pack(bins)) for service, bins in sorted(by_service.items())]

    def dep_grain_rows(self, grains: Sequence[int] = SQL_GRAINS) -> list[tuple[int, int, tuple[str, str], list[int]]]:
        """``(grain, bucket, (parent, child), [calls, errors])`` at every grain, as :meth:`op_rows` (for a
        backend that derives each grain from the one below)."""
        return _grains(self.deps, grains)


K = TypeVar("K", bound=tuple[object, ...])


def _grains(minute_rows: dict[tuple[int, K], Counters], grains: Sequence[int]) -> list[tuple[int, int, K, Counters]]:
    """Minute rows and the rows of the coarser ``grains`` they sum to (:data:`SQL_GRAINS` or
    :data:`PLAIN_GRAINS`), dropping rows that sum to zero."""
    by_grain: dict[tuple[int, int, K], Counters] = {}
    per_minute = [(grain, GRAIN_US[grain] // MINUTE_US if grain != TOTAL else 0) for grain in grains]
    for (minute, key), values in minute_rows.items():
        for grain, minutes in per_minute:
            grain_key = (grain, minute // minutes if minutes else 0, key)
            row = by_grain.get(grain_key)
            if row is None:
                by_grain[grain_key] = list(values)
            else:
                for i, v in enumerate(values):
                    row[i] += v
    return sorted((grain, bucket, key, values) for (grain, bucket, key), values in by_grain.items() if any(values))


def _sketch_grains(
    minute_rows: dict[tuple[int, K], Counters],
    minute_bins: dict[tuple[int, tuple[Any, ...]], list[int]],
    grains: Sequence[int],
) -> list[tuple[int, int, K, Counters, bytes]]:
    """Counter rows joined with their packed sketch deltas at each of ``grains``, from the minute rows in
    one pass: the bins (a row per key and bin, thousands a round) are grouped per minute and key once and
    each minute's sketch packed once; a coarser row summing a single minute row (the usual case: a round's
    traces start within a minute or two) takes that row's counters and packed sketch as they are, and only
    a coarser row of several minutes sums their counters and bins. Rows whose counters and bins are all
    zero are left out; rows in (grain, bucket, key) order."""
    sketches: dict[tuple[int, Any], Bins] = {}  # (minute, key) -> bins: the key is the bin key less its bin
    for (minute, bin_key), (n,) in minute_bins.items():
        if n:
            at = (minute, bin_key[:-1])
            found = sketches.get(at)
            if found is None:
                sketches[at] = {bin_key[-1]: n}
            else:
                found[bin_key[-1]] = n
    minutes: dict[tuple[int, K], tuple[Counters, bytes]] = {
        at: (minute_rows.get(at) or _counters(), pack(sketches.get(at, {}).items()))
        for at in minute_rows.keys() | sketches.keys()
    }
    out: list[tuple[int, int, K, Counters, bytes]] = []
    for grain in grains:
        if grain == MINUTE:
            out.extend((MINUTE, minute, key, list(values), bins) for (minute, key), (values, bins) in minutes.items())
            continue
        per_bucket = GRAIN_US[grain] // MINUTE_US if grain != TOTAL else 0
        groups: dict[tuple[int, K], list[tuple[int, K]]] = {}
        for at in minutes:
            groups.setdefault((at[0] // per_bucket if per_bucket else 0, at[1]), []).append(at)
        for (bucket, key), members in groups.items():
            if len(members) == 1:
                values, bins = minutes[members[0]]
                out.append((grain, bucket, key, list(values), bins))
                continue
            summed: Bins = {}
            for at in members:
                add_to(summed, sketches.get(at, {}).items())
            out.append((grain, bucket, key, merge_counters(minutes[at][0] for at in members), pack(summed.items())))
    out = [row for row in out if row[4] or any(row[3])]
    out.sort(key=lambda row: (row[0], row[1], row[2]))
    return out


def merge_counters(rows: Iterable[Sequence[int]]) -> Counters:
    """The element-wise sum of counter rows."""
    total = _counters()
    for row in rows:
        for i, v in enumerate(row):
            total[i] += v
    return total


_contribution_encoder: Final = msgspec.msgpack.Encoder()
_contribution_decoder: Final = msgspec.msgpack.Decoder(Contribution)


def contribution_msgpack(share: Contribution) -> bytes:
    """A contribution as msgpack, uncompressed: what crosses between processes."""
    return _contribution_encoder.encode(share)


def contribution_of_msgpack(data: bytes) -> Contribution:
    """:func:`contribution_msgpack` undone."""
    return _contribution_decoder.decode(data)


def encode_contribution(share: Contribution) -> bytes:
    """A contribution as stored: msgpack, compressed (:func:`~shared.store.encoding.pack_blob`)."""
    return pack_blob(contribution_msgpack(share))


def decode_contribution(blob: bytes) -> Contribution:
    """A stored contribution, compressed (layout v3) or not (v2)."""
    return contribution_of_msgpack(unpack_blob(blob))
