"""What a SQL backend supplies to the shared algorithms: its SQL and its driver calls, one
:class:`SqlDriver` bound to one connection inside one transaction.

The algorithms (:mod:`.writer`, :mod:`.reader`, :mod:`.migrate`) are coroutines written once. The
PostgreSQL driver's methods await the server; the SQLite driver's methods run the statement at once and
never suspend, so on the SQLite connection's thread a whole algorithm runs to its end in one step
(:func:`run_sync`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

from shared.critical_paths import Path
from shared.store.encoding import Dictionaries
from shared.store.finalizing import FinalizeRow, Summary
from shared.store.rollups import RollupDelta
from shared.store.sql.statements import Dialect
from shared.store.writing import Chunk, NewTrace, TraceRow, TraceUpdate

T = TypeVar("T")

Row = Sequence[Any]
Job = Callable[["SqlDriver"], Coroutine[Any, Any, T]]
"""An algorithm run on one driver, in one transaction."""
OP_WIDTH: Final = 5
"""Values per ``op_index`` row: the (service, operation) hash, trace start (µs), tid, smallest and largest
duration
(µs). Index rows travel as one flat list of their values (no tuple per row)."""
TAG_WIDTH: Final = 3
"""Values per ``tag_index`` row: the (key, value) pair's hash (:func:`shared.store.tags.tag_hash`), trace
start (µs), tid."""
EndpointIndexRow = tuple[str, str, int, int, int, bytes]
"""An ``endpoint_traces`` row: root service, root operation, duration (µs), tid, start (µs), critical path."""
EndpointKey = tuple[str, str, int, int]
"""The key of an ``endpoint_traces`` row: root service, root operation, duration (µs), tid."""
PurgeCandidate = tuple[str, int, bytes | None, int | None, bool]
"""trace_id, tid, contribution (stored: a sampled-out trace's, or one written before shares were derived),
final_chunks (the chunks its last finalization merged), whether it has search index rows."""
ArchiveRow = tuple[str, int, str | None, str | None, int | None]
"""trace_id, tid, root service, root operation, duration (µs) of a trace a registered block takes out of the
hot store: its ``endpoint_traces`` key, read from its row (the texts as stored before any escaping)."""


C = TypeVar("C")


class Bound(Generic[C]):
    """A driver bound to one connection ``c``, and its store's zstd dictionaries ``dicts`` (a fresh set
    when not given: the layout migration's, which reads and writes chunks without a dictionary)."""

    __slots__ = ("c", "dicts")

    def __init__(self, c: C, dicts: Dictionaries | None = None) -> None:
        self.c = c
        self.dicts = Dictionaries() if dicts is None else dicts


def trace_rows(rows: Iterable[Row]) -> dict[str, TraceRow]:
    """:class:`TraceRow` by trace id from rows ``(trace_id, tid, state, chunks, root_done_us, due_us)``."""
    return {
        r[0]: TraceRow(trace_id=r[0], tid=r[1], state=r[2], chunks=r[3], root_done_us=r[4], due_us=r[5]) for r in rows
    }


def finalize_rows(rows: Iterable[Row]) -> list[FinalizeRow]:
    """:class:`FinalizeRow` from rows ``(trace_id, tid, chunks, contribution, final_chunks, has index rows)``."""
    return [
        FinalizeRow(trace_id=r[0], tid=r[1], chunks=r[2], contribution=r[3], final_chunks=r[4], indexed=bool(r[5]))
        for r in rows
    ]


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the SQLite driver's) to its result, in the calling thread."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a synchronous driver's coroutine suspended")


class SqlDriver(Protocol):
    """One connection in one transaction. Text parameters are passed as Python strings; a driver escapes
    them as its database stores text (``dialect.text``), and unescapes what it returns."""

    @property
    def dialect(self) -> Dialect:
        """How this database spells placeholders, escapes text and joins."""
        ...

    @property
    def chunk_key(self) -> str:
        """The key columns of ``chunks``, comma-separated."""
        ...

    @property
    def v4_tables(self) -> tuple[str, str, str]:
        """The ``CREATE TABLE`` of ``op_index``, ``tag_index`` and ``rollup_services_bins`` (layout v4),
        for the v3 to v4 migration."""
        ...

    @property
    def v5_sketch(self) -> tuple[str, str]:
        """The column definition of a rollup row's packed sketch and the ``CREATE`` statements of
        ``rollup_services_sketch`` (and what its upserts call), for the v4 to v5 migration."""
        ...

    @property
    def dicts(self) -> Dictionaries:
        """The store's zstd dictionaries: those loaded, and its writer's (:mod:`.dicts`)."""
        ...

    # -- reads ---------------------------------------------------------------------------------------

    async def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Row]:
        """The rows of one statement written in ``dialect`` (placeholders already numbered if need be)."""
        ...

    async def execute(self, sql: str, params: Sequence[Any]) -> None: ...

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement once per row of parameters."""
        ...

    async def paths(self, ids: Collection[int]) -> dict[int, tuple[str, ...]]:
        """The labels of these calling contexts (ids without a stored path are left out)."""
        ...

    async def chunk_rows(self, tids: Mapping[str, int]) -> dict[str, list[tuple[bool, bytes]]]:
        """The stored chunks of each trace (trace_id -> tid), ``(late, body)`` in order, as stored: the
        dictionaries they name may not be loaded yet. Only :func:`.dicts.read_chunks` calls it, which
        loads them; read chunks through that."""
        ...

    # -- writes --------------------------------------------------------------------------------------

    async def read_rows(self, trace_ids: Collection[str]) -> dict[str, TraceRow]:
        """The existing rows among ``trace_ids``, locked against other writers where writers run
        concurrently."""
        ...

    async def insert_traces(self, new: Sequence[NewTrace], now_us: int) -> Iterable[tuple[str, int]]:
        """Insert the new traces' rows; their ``(trace_id, tid)``. Raises if another writer created one
        meanwhile (the transaction is then retried whole)."""
        ...

    async def update_traces(self, updates: Sequence[TraceUpdate], now_us: int) -> None: ...

    async def insert_chunks(self, chunks: Sequence[Chunk], tids: Mapping[str, int]) -> None: ...

    async def open_spans(self, rows: Sequence[tuple[str, int]]) -> None:
        """``(span_id, tid)`` into the open-span index (present ones ignored)."""
        ...

    async def close_spans(self, rows: Sequence[tuple[str, int]]) -> None: ...

    # -- finalization and purge ----------------------------------------------------------------------

    async def finalize_rows(self, trace_ids: Sequence[str]) -> list[FinalizeRow]:
        """The active rows among ``trace_ids`` (ids once each), locked where writers run concurrently
        (rows another transaction holds are skipped)."""
        ...

    async def mark_waiting(self, tids: Sequence[int]) -> None: ...

    async def store_summaries(self, summaries: Sequence[Summary], now_us: int) -> None: ...

    async def add_index_rows(
        self, ops: Sequence[Any], tags: Sequence[Any], endpoints: Sequence[EndpointIndexRow]
    ) -> None:
        """Insert index rows (present ones ignored): ``ops`` and ``tags`` flat (:data:`OP_WIDTH`,
        :data:`TAG_WIDTH` values per row)."""
        ...

    async def remove_index_rows(
        self, ops: Sequence[Any], tags: Sequence[Any], endpoints: Sequence[EndpointKey]
    ) -> None:
        """Delete index rows, given as :meth:`add_index_rows` takes them."""
        ...

    async def delete_traces_data(self, tids: Sequence[int]) -> None:
        """Delete the chunks and open-span entries of these traces (their rows stay)."""
        ...

    async def insert_paths(self, paths: Mapping[int, Path]) -> None:
        """Name calling contexts (present ids ignored)."""
        ...

    async def apply_rollups(self, delta: RollupDelta) -> None:
        """Add the delta to every rollup table; rows a subtraction emptied go."""
        ...

    async def purge_candidates(self, before_us: int, limit: int, *, lock: bool = True) -> list[PurgeCandidate]:
        """Up to ``limit`` finalized or dropped traces that started before ``before_us``, none pinned (with ``lock``,
        in a write transaction: locked, rows another transaction holds skipped; without, as a read
        transaction sees them)."""
        ...

    async def delete_traces(self, tids: Sequence[int]) -> None: ...

    async def archive_rows(self, trace_ids: Sequence[str], finalized_by_us: int) -> list[ArchiveRow]:
        """The rows among ``trace_ids`` an archived block may take out of the hot store: finalized, and last
        finalized at or before ``finalized_by_us`` (locked where writers run concurrently, rows another
        transaction holds skipped: they stay hot, and are read once)."""
        ...

    # -- layout ------------------------------------------------------------------------------------

    async def layout_version(self) -> int:
        """The storage layout the database holds (0: empty)."""
        ...

    async def set_layout_version(self, version: int) -> None: ...

    async def create_schema(self) -> None:
        """Every table, the latency sketch's too."""
        ...

    async def has_sketch(self) -> bool:
        """Whether the latency sketch tables are there (a layout v2 database written before them lacks them)."""
        ...

    async def create_sketch(self) -> None:
        """Create the latency sketch tables (empty)."""
        ...

    async def create_added_tables(self) -> None:
        """Create the tables and columns added to the current layout since its release, where missing."""
        ...

    async def set_v1_aside(self) -> None:
        """Move layout v1's tables aside (:data:`~.migrate.V1_TABLES`, renamed ``v1_...``, without their
        indexes), then create the schema."""
        ...

    async def v1_spans(self, trace_ids: Sequence[str]) -> Sequence[Row]:
        """Layout v1's span rows ``(trace_id, body, finish, late)`` of these traces."""
        ...

    async def insert_migrated(self, values: Sequence[Any], chunks: Sequence[tuple[bool, bytes]]) -> int:
        """Insert one migrated trace's row (the columns of :data:`~.migrate.MIGRATED_COLUMNS`, in order) and
        its chunks; its tid."""
        ...
