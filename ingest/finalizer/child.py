"""The finalizer process's main (``python -m ingest.finalizer.child``, started by
:class:`ingest.finalizer.client.FinalizerProcess`): it answers the worker's rounds until its input closes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import BinaryIO

from ingest.finalizer.protocol import Ready, Round, RoundDone, Start, frame, read_message
from ingest.metrics import SpanSum, span_sums
from shared.clock import now_us
from shared.gc_tuning import Trimmer, cap_malloc_arenas, tuned_gc
from shared.logs import configure_logging
from shared.sampling import Sampler, sampler_for
from shared.settings import Settings
from shared.store import TraceStore, open_store


def shares_of(due: Sequence[str], parts: int) -> list[list[str]]:
    """``due`` cut into at most ``parts`` contiguous runs whose lengths differ by at most one (none empty;
    none at all when nothing is due)."""
    n = len(due)
    parts = min(max(parts, 1), n)
    return [list(due[i * n // parts : (i + 1) * n // parts]) for i in range(parts)]


async def finalize_round(store: TraceStore, sampler: Sampler | None, request: Round) -> RoundDone:
    """One round: the due traces of the shards, finalized by the store's ``concurrent_finalizes`` calls at
    once on disjoint shares (docs/adr/0006-postgres-rounds-in-two-shares.md). Every share's outcome
    counts: a share that failed does not undo the others (each is its own transaction), so the answer
    holds what was finalized and the first error."""
    if sampler is not None:
        await sampler.refresh(store, now_us())
    due = await store.due_traces(set(request.shards), now_us(), request.limit)
    sums: list[SpanSum] = []
    outcomes = await asyncio.gather(
        *(
            store.finalize(
                share, now_us=now_us(), sampler=sampler, on_first=lambda shares: sums.extend(span_sums(shares))
            )
            for share in shares_of(due, store.concurrent_finalizes)
        ),
        return_exceptions=True,
    )
    finalized = 0
    error: str | None = None
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            error = error or f"{type(outcome).__name__}: {outcome}"
        elif isinstance(outcome, BaseException):
            raise outcome  # cancelled, or the process is exiting
        else:
            finalized += len(outcome)
    return RoundDone(due=len(due), finalized=finalized, span_sums=sums, error=error)


def _write(stream: BinaryIO, message: Ready | RoundDone) -> None:
    stream.write(frame(message))
    stream.flush()


async def _serve(settings: Settings, requests: asyncio.StreamReader, answers: BinaryIO) -> None:
    try:
        store = await open_store(settings, checkpoints=False)  # the worker's own connection checkpoints
    except Exception as exc:
        _write(answers, Ready(error=f"{type(exc).__name__}: {exc}"))
        return
    sampler = sampler_for(settings)
    trim = Trimmer()
    try:
        _write(answers, Ready())
        while (message := await read_message(requests)) is not None:
            if not isinstance(message, Round):
                answer = RoundDone(due=0, finalized=0, error=f"unexpected {type(message).__name__}")
            else:
                try:
                    answer = await finalize_round(store, sampler, message)
                except Exception as exc:  # the store failed (finding the due traces): the traces stay due
                    answer = RoundDone(due=0, finalized=0, error=f"{type(exc).__name__}: {exc}")
            _write(answers, answer)
            await trim()  # a batch's chunks and analyses freed: their pages back to the system, every so often
    finally:
        await store.close()


async def _main(requests: BinaryIO, answers: BinaryIO) -> int:
    """Read :class:`Start`, then serve the rounds. The requests are read by the event loop itself, not by a
    thread's blocking read (docs/adr/0003-finalizer-process.md)."""
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), requests)
    start = await read_message(reader)
    if not isinstance(start, Start):
        return 2
    configure_logging(start.settings.log_level)
    await _serve(start.settings, reader, answers)
    return 0


def main() -> int:
    # A Ctrl-C reaches the whole process group: the worker handles it and closes this process's input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol has stdin and stdout to itself: anything the code prints goes to stderr instead.
    requests = os.fdopen(os.dup(0), "rb", buffering=0)  # unbuffered: nothing read ahead of the loop's reader
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    cap_malloc_arenas()  # before the store's threads start
    with tuned_gc():
        return asyncio.run(_main(requests, answers))


if __name__ == "__main__":
    sys.exit(main())
