"""The store's zstd dictionaries (table ``zstd_dicts``), read and written through a
:class:`~.driver.SqlDriver` for both SQL backends; the driver's :attr:`~.driver.SqlDriver.dicts` holds
those the store loaded (:class:`~shared.store.encoding.Dictionaries`).

* Chunks are read through :func:`read_chunks`, which loads every dictionary they name that is not loaded
  yet, in the same transaction, so decoding them stays synchronous. A dictionary is committed before any
  chunk names it, so the snapshot that holds a chunk holds its dictionary.
* A writer's first write looks for the newest dictionary and uses it (:func:`use_newest`).
* A writer that found none writes plain chunks and trains one from their payloads; it stores it in a
  transaction of its own (:func:`store`), then uses it. Several writers may each train and store one:
  every chunk names its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from shared.store.sql.driver import SqlDriver

NEWEST: Final = "SELECT id, body FROM zstd_dicts ORDER BY id DESC LIMIT 1"
BY_ID: Final = "SELECT body FROM zstd_dicts WHERE id = ?"
INSERT: Final = "INSERT INTO zstd_dicts (body) VALUES (?) RETURNING id"


async def read_chunks(d: SqlDriver, tids: Mapping[str, int]) -> dict[str, list[tuple[bool, bytes]]]:
    """The stored chunks of each trace (trace_id -> tid), ``(late, body)`` in order
    (:meth:`~.driver.SqlDriver.chunk_rows`), with the dictionaries they name loaded."""
    chunks = await d.chunk_rows(tids)
    dicts = d.dicts
    for ident in sorted(dicts.missing(body for rows in chunks.values() for _, body in rows)):
        found = await d.fetch(d.dialect.sql(BY_ID), [ident])
        if not found:
            raise LookupError(f"a chunk names zstd dictionary {ident}, which the store does not hold")
        dicts.load(ident, bytes(found[0][0]))
    return chunks


async def use_newest(d: SqlDriver) -> None:
    """On a writer's first write: compress with the store's newest dictionary, if it has one."""
    dicts = d.dicts
    if dicts.checked:
        return
    found = await d.fetch(NEWEST, [])
    if found:
        dicts.use(found[0][0], bytes(found[0][1]))
    dicts.checked = True


async def store(d: SqlDriver, body: bytes) -> int:
    """Store a new dictionary; its id."""
    found = await d.fetch(d.dialect.sql(INSERT), [body])
    return int(found[0][0])
