"""The reads behind both Jaeger-compatible APIs: traces found as Jaeger finds them, search, services,
operations, dependencies and the rollups of the metrics API. Answers are the store's Structs; the views
in :mod:`query_api.jaeger` turn them into each API's model.

Trace ids here are opaque (``trace-abc-123`` is one), but Jaeger reads a hex id as one 128-bit number:
a lookup tries the id as given first, then the spellings producers store that number under (see
:func:`jaeger_id_spellings`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Final

from shared.analysis import Dependency
from shared.archive.tiered import TieredReads, TieredTrace
from shared.store.base import RollupRow, TraceQuery, TraceStore, TraceSummary, Window

LOAD_CONCURRENCY: Final = 8
"""Traces of a search result read from the store at once."""
MINUTE_US: Final = 60_000_000
_HEX: Final = re.compile(r"[0-9a-fA-F]+")


def jaeger_id_spellings(trace_id: str) -> list[str]:
    """The ids a trace looked up as ``trace_id`` may be stored under, in the order they are tried.

    ``trace_id`` itself first (ids here are opaque: ``trace-abc-123`` is one). Then, when it is 1..32 hex
    digits, which Jaeger reads as one 128-bit number whatever their case and leading zeros
    (``model.TraceIDFromString``: ``strconv.ParseUint(s, 16, 64)`` per half), the spellings producers store
    that number under: lower case as given, 16 digits (a 64-bit id, as Zipkin writes it) and 32 digits (as
    OTLP writes it)."""
    spellings = [trace_id]
    if len(trace_id) <= 32 and _HEX.fullmatch(trace_id):
        value = int(trace_id, 16)
        forms = [trace_id.lower(), *([f"{value:016x}"] if value < 1 << 64 else []), f"{value:032x}"]
        spellings.extend(form for form in dict.fromkeys(forms) if form != trace_id)
    return spellings


class JaegerService:
    """What the Jaeger views read, from a :class:`TraceStore` (traces through both tiers: ``reads``)."""

    def __init__(self, store: TraceStore, reads: TieredReads) -> None:
        self._store = store
        self._reads = reads

    async def find_trace(self, trace_id: str) -> TieredTrace | None:
        """The stored trace Jaeger would answer for ``trace_id``, and its tier: the first spelling (see
        :func:`jaeger_id_spellings`) with a stored span (an archived one without its analysis, which no
        Jaeger answer holds); ``None`` when there is none. A miss costs one read
        per spelling (4 at most) in each tier."""
        for spelling in jaeger_id_spellings(trace_id):
            found = await self._reads.get_trace(spelling, analyzed=False)  # Jaeger's answers hold only the spans
            if found is not None:
                return found
        return None

    async def load_traces(self, trace_ids: Sequence[str]) -> list[TieredTrace]:
        """The stored traces of ``trace_ids`` (each found as :meth:`find_trace` finds it), in that order;
        ids with no stored span are left out."""
        gate = asyncio.Semaphore(LOAD_CONCURRENCY)

        async def load(trace_id: str) -> TieredTrace | None:
            async with gate:
                return await self.find_trace(trace_id)

        loaded = await asyncio.gather(*(load(trace_id) for trace_id in trace_ids))
        return [found for found in loaded if found is not None]

    async def search(self, query: TraceQuery) -> list[TieredTrace]:
        """The full traces matching ``query``, newest first (Jaeger's searches answer whole traces)."""
        return await self.load_traces([summary.trace_id for summary in await self.summaries(query)])

    async def summaries(self, query: TraceQuery) -> list[TraceSummary]:
        """The summaries of the traces matching ``query`` in both tiers, newest first (no trace is loaded)."""
        return [found.summary for found in await self._reads.find_traces(query)]

    async def pin_trace(self, trace_id: str) -> bool:
        """Pin the trace (Jaeger's archive button: no retention deletes it), found as :meth:`find_trace`
        finds it; whether it was found."""
        found = await self.find_trace(trace_id)
        if found is None:
            return False
        await self._store.pin_trace(found.trace.trace_id)
        return True

    async def services(self) -> list[str]:
        """Service names seen in finalized traces, sorted."""
        return await self._store.services()

    async def operations(self, service: str) -> list[str]:
        """Operation names of ``service``, sorted."""
        return await self._store.operations(service)

    async def operation_kinds(self, service: str, span_kind: str) -> list[tuple[str, str]]:
        """(operation, span kind) pairs of ``service``, only those of ``span_kind`` when given (any case, as
        Jaeger reads it)."""
        pairs = await self._store.operation_kinds(service)
        wanted = span_kind.lower()
        return [(name, kind) for name, kind in pairs if not wanted or kind == wanted]

    async def dependencies(self, since_us: int, until_us: int, service: str = "") -> list[Dependency]:
        """Service call counts over traces that started in the window (the store's hour grain widens it);
        only the links to or from ``service`` when given."""
        links = await self._store.dependencies(since_us, until_us)
        return [link for link in links if not service or service in (link.parent, link.child)]

    async def minute_rollups(
        self, services: Sequence[str], window: Window, *, sketch: bool = True
    ) -> dict[str, list[RollupRow]]:
        """Per service, its operations' rollup rows of each minute in ``window`` (without their sketches
        unless ``sketch``)."""
        return {
            service: await self._store.rollups("operations", window, step_us=MINUTE_US, service=service, sketch=sketch)
            for service in services
        }
