"""The rows a finalized trace has in the search indexes and the retention index: written by its
finalization, the previous finalization's rows removed (the same rows never both removed and written in
one batch: a delete and an insert with one timestamp leave the delete)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from shared.store.finalizing import encode_critical
from shared.store.rollups import HOUR_US, Contribution


class Table:
    """One index table: its key columns, value columns, and the statements that write and delete a row."""

    __slots__ = ("clustering", "delete_cql", "insert_cql", "name", "partition", "values")

    def __init__(
        self, name: str, partition: tuple[str, ...], clustering: tuple[str, ...], values: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.partition = partition
        self.clustering = clustering
        self.values = values
        columns = (*partition, *clustering, *values)
        self.insert_cql = (
            f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) USING TTL ?"
        )
        self.delete_cql = f"DELETE FROM {name} WHERE {' AND '.join(f'{c} = ?' for c in (*partition, *clustering))}"


IDX_OPS: Final = Table(
    "idx_ops", ("ns", "service", "operation", "hour"), ("start_us", "trace_id"), ("min_us", "max_us")
)
IDX_TAGS: Final = Table("idx_tags", ("ns", "key", "value", "hour"), ("start_us", "trace_id"))
IDX_START: Final = Table("idx_start", ("ns", "hour"), ("start_us", "trace_id"))
IDX_DURATION: Final = Table("idx_duration", ("ns", "hour"), ("duration_us", "trace_id"), ("start_us",))
IDX_ENDPOINT: Final = Table(
    "idx_endpoint", ("ns", "service", "operation", "hour"), ("duration_us", "trace_id"), ("start_us", "critical")
)
BY_START: Final = Table("by_start", ("ns", "hour"), ("shard", "start_us", "trace_id"))


class IndexRow(msgspec.Struct, frozen=True, gc=False):
    table: Table
    key: tuple[Any, ...]
    """Every primary key column's value, in the table's order."""
    values: tuple[Any, ...] = ()

    @property
    def partition(self) -> tuple[Any, ...]:
        return (self.table.name, *self.key[: len(self.table.partition)])


def search_rows(ns: str, trace_id: str, share: Contribution) -> list[IndexRow]:
    """A kept trace's rows in the search indexes (its endpoint row carries its critical path by context,
    for tail reads)."""
    start = share.start_us
    hour = start // HOUR_US
    rows = [IndexRow(IDX_OPS, (ns, s, o, hour, start, trace_id), (lo, hi)) for s, o, lo, hi in share.index_ops()]
    rows.extend(IndexRow(IDX_TAGS, (ns, k, v, hour, start, trace_id)) for k, v in share.tags)
    rows.append(IndexRow(IDX_START, (ns, hour, start, trace_id)))
    rows.append(IndexRow(IDX_DURATION, (ns, hour, share.duration_us, trace_id), (start,)))
    service, operation = share.endpoint
    if (service, operation) != ("", ""):  # rootless traces have no endpoint to be the tail of
        key = (ns, service, operation, hour, share.duration_us, trace_id)
        rows.append(IndexRow(IDX_ENDPOINT, key, (start, encode_critical(share))))
    return rows


def retention_row(ns: str, trace_id: str, shard: str, start_us: int) -> IndexRow:
    """Every finalized or dropped trace, by start hour and shard: what a shard's purge walks."""
    return IndexRow(BY_START, (ns, start_us // HOUR_US, shard, start_us, trace_id))


def index_changes(
    old: Iterable[IndexRow], new: Iterable[IndexRow], ttl_s: int
) -> dict[tuple[Any, ...], list[tuple[str, Sequence[Any]]]]:
    """The statements that take the ``old`` rows out and put the ``new`` rows in, grouped by partition."""
    new_rows = list(new)
    kept = {(r.table.name, r.key) for r in new_rows}
    groups: dict[tuple[Any, ...], list[tuple[str, Sequence[Any]]]] = {}
    for row in old:
        if (row.table.name, row.key) not in kept:
            groups.setdefault(row.partition, []).append((row.table.delete_cql, row.key))
    for row in new_rows:
        groups.setdefault(row.partition, []).append((row.table.insert_cql, (*row.key, *row.values, ttl_s)))
    return groups
