"""Finalization in a process of its own: the worker's second core.

A worker's time goes to two things that share nothing but the store: consuming (fetch, decode, redact,
write a batch) and finalizing (scan the due traces, analyze them, write summaries, search index rows and
rollups). In one process they take turns on one interpreter lock, and a worker used a little more than
one core of two. So the worker starts ``python -m ingest.finalizer`` beside it, and each finalize round
of :meth:`ingest.worker.Worker.finalize_due` runs there: the child opens the same store (a connection of
its own, no trace cache), finds the due traces of the shards the worker names, finalizes them in one
transaction and answers with the counts and the span metrics of the traces finalized for the first time.

Nothing of the guarantees moves: a round is still one store transaction, for the shards the worker owns
when it asks, under the worker's ``finalizing`` lock (so a revoked worker's round ends before the next
owner's starts); the store serializes the two processes' transactions as it does any two writers. The
child keeps no state between rounds: if it dies the round fails like a store error (the work stays due)
and the next round starts a new child. The child exits when its input closes, so it never outlives the
worker.

The wire: each message is a 4-byte big-endian length and a msgpack body: the worker sends
:class:`Start`, then :class:`Round` after :class:`Round`; the child answers :class:`Ready` once, then one
:class:`RoundDone` per round.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Final

import msgspec

from ingest.metrics import SpanSum, span_sums
from shared.sampling import Sampler, sampler_for
from shared.settings import Settings
from shared.store import TraceStore, open_store

log = logging.getLogger("ingest.finalizer")

_LENGTH: Final = struct.Struct(">I")
_ROOT: Final = str(Path(__file__).resolve().parents[1])
"""Put first on the child's import path: it runs the code this worker runs."""
START_RETRY_S: Final = 0.5
START_RETRY_MAX_S: Final = 10.0
"""After a start failed, the next is tried this long after (doubling up to the max): rounds in between fail
at once with the same error."""
STOP_TIMEOUT_S: Final = 10.0
"""How long a stopping worker waits for its finalizer to end a round in flight and exit."""


class Start(msgspec.Struct, tag=True):
    settings: Settings


class Ready(msgspec.Struct, tag=True):
    error: str | None = None


class Round(msgspec.Struct, tag=True):
    shards: list[str]
    limit: int


class RoundDone(msgspec.Struct, tag=True):
    due: int
    """Traces found due (at most the round's limit)."""
    finalized: int
    span_sums: list[SpanSum] = []
    """The span metrics of the traces finalized for the first time (see :func:`ingest.metrics.span_sums`)."""
    error: str | None = None
    """The store failed: nothing was finalized, or (a round of several transactions) only ``finalized``
    traces; the others stay due."""


Message = Start | Ready | Round | RoundDone
_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Message)


class FinalizerError(RuntimeError):
    """The finalizer process failed or is gone; the round's traces stay due."""


def separate_finalizer(settings: Settings, store: object) -> bool:
    """Whether a worker on ``store`` finalizes in a process of its own: when the settings ask for it
    (``TRACING_FINALIZE_PROCESS``, on by default) and another process can open the same store (a SQLite
    file or PostgreSQL; not an in-memory SQLite database, not Cassandra, whose rounds stay in the worker)."""
    return settings.finalize_process and bool(getattr(store, "shared_by_processes", False))


def _frame(message: Message) -> bytes:
    body = _encoder.encode(message)
    return _LENGTH.pack(len(body)) + body


class FinalizerProcess:
    """The worker's side: starts the child on the first round, and again after it failed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._failed: tuple[float, float, str] | None = None
        """After a failed start: (when the next start may be tried, the delay after that, the error)."""

    @property
    def pid(self) -> int | None:
        """The running child's process id (``None``: none is running)."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        """Start the child now, if it is not running (a round starts it too)."""
        async with self._lock:
            await self._running()

    async def _running(self) -> asyncio.subprocess.Process:
        process = self._process
        if process is not None and process.returncode is None:
            return process
        failed = self._failed
        if failed is not None and time.monotonic() < failed[0]:
            raise FinalizerError(failed[2])  # not a new process per round while the store is unreachable
        try:
            process = await self._start()
        except FinalizerError as exc:
            delay = min(failed[1] * 2, START_RETRY_MAX_S) if failed else START_RETRY_S
            self._failed = (time.monotonic() + delay, delay, str(exc))
            raise
        self._failed = None
        return process

    async def _start(self) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ingest.finalizer",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        self._process = process
        try:
            ready = await self._exchange(process, Start(settings=self.settings))
        except BaseException:
            await self._kill()
            raise
        if not isinstance(ready, Ready) or ready.error is not None:
            await self._kill()
            raise FinalizerError(f"finalizer process did not start: {getattr(ready, 'error', ready)}")
        log.info("finalizer process %d started", process.pid)
        return process

    @staticmethod
    def _send(process: asyncio.subprocess.Process, message: Message) -> None:
        assert process.stdin is not None
        process.stdin.write(_frame(message))

    @staticmethod
    async def _receive(process: asyncio.subprocess.Process) -> Message:
        assert process.stdin is not None and process.stdout is not None
        try:
            await process.stdin.drain()
            (length,) = _LENGTH.unpack(await process.stdout.readexactly(_LENGTH.size))
            return _decoder.decode(await process.stdout.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise FinalizerError(f"finalizer process exited (status {process.returncode})") from exc

    @classmethod
    async def _exchange(cls, process: asyncio.subprocess.Process, message: Message) -> Message:
        cls._send(process, message)
        return await cls._receive(process)

    async def round(self, shards: Sequence[str], limit: int) -> RoundDone:
        """Finalize up to ``limit`` traces of ``shards`` that are due now, in the child. A store error is
        in the answer's ``error`` (with what was finalized before it); a child that failed raises
        :class:`FinalizerError`."""
        answers: list[RoundDone] = []
        await self.rounds(lambda: shards, limit, lambda done, _: answers.append(done), backlog=False)
        return answers[0]

    async def rounds(
        self,
        shards: Callable[[], Sequence[str]],
        limit: int,
        on_done: Callable[[RoundDone, float], None],
        *,
        backlog: bool = True,
    ) -> None:
        """Rounds of up to ``limit`` traces of ``shards()`` (read at each request) until one finds fewer
        than ``limit`` due; each answer goes to ``on_done`` in order, with the seconds the child spent on
        it. ``backlog`` False: one round only.

        Once a round came back full, the next is queued in the child's input behind the one it runs, so
        that the child starts it the moment it answers, without waiting for this process to read the
        answer and write the next request (its event loop may be decoding a fetch meanwhile). After the
        last full round the queued one still runs: it finds what became due meanwhile, or nothing. An
        answer with a store error stops the requests, and the answers still in flight go to ``on_done``
        too, so the caller sees every round's counts and errors; a child that failed raises
        :class:`FinalizerError`."""
        async with self._lock:
            process = await self._running()
            try:
                self._send(process, Round(shards=list(shards()), limit=limit))
                sent = [time.perf_counter()]  # when each request in flight was sent
                last = sent[0]
                more = backlog
                while sent:
                    done = await self._receive(process)
                    now = time.perf_counter()
                    if not isinstance(done, RoundDone):
                        raise FinalizerError(f"finalizer process answered {type(done).__name__} to a round")
                    on_done(done, now - max(sent.pop(0), last))
                    last = now
                    more = more and done.error is None and done.due >= limit
                    while more and len(sent) < 2:
                        self._send(process, Round(shards=list(shards()), limit=limit))
                        sent.append(time.perf_counter())
            except BaseException:  # cancelled or broken mid-round: the next answer would be this one's
                await self._kill()
                raise

    async def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        """Close the child's input (it ends a round in flight and exits); kill it if it does not."""
        async with self._lock:
            process = self._process
            if process is None:
                return
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), timeout=STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("finalizer process %d did not exit; killing it", process.pid)
            await self._kill()


# -- the child ------------------------------------------------------------------------------------------


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n and (part := stream.read(n - len(data))):
        data += part
    return data


def _read(stream: BinaryIO) -> Message | None:
    """The next message, or ``None`` at the end of the input (the worker closed it, or is gone)."""
    head = _read_exactly(stream, _LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    body = _read_exactly(stream, length)
    if len(body) < length:
        return None
    return _decoder.decode(body)


async def _requests(stream: BinaryIO) -> AsyncIterator[Message]:
    """The messages of ``stream`` (a pipe) until its end, read by the event loop itself. Not a thread's
    blocking read: handing each request from a thread to the loop took 6 ms on average while the worker
    and the broker kept both cores busy (each hand-off waits for the scheduler to run the other thread),
    the finalizer process's idle time between two rounds of a backlog."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stream)
    while True:
        try:
            (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            return
        yield _decoder.decode(body)


def _write(stream: BinaryIO, message: Message) -> None:
    stream.write(_frame(message))
    stream.flush()


def shares_of(due: Sequence[str], parts: int) -> list[list[str]]:
    """``due`` cut into at most ``parts`` contiguous runs whose lengths differ by at most one (none empty;
    none at all when nothing is due)."""
    n = len(due)
    parts = min(max(parts, 1), n)
    return [list(due[i * n // parts : (i + 1) * n // parts]) for i in range(parts)]


async def _round(store: TraceStore, sampler: Sampler | None, request: Round) -> RoundDone:
    """One round: the due traces of the shards, finalized by ``concurrent_finalizes`` (a store's, 1 when
    it has none) calls at once on disjoint shares. Every share's outcome counts: a share that failed does
    not undo the others (each is its own transaction), so the answer holds what was finalized and the
    first error."""
    due = await store.due_traces(set(request.shards), time.time_ns() // 1000, request.limit)
    sums: list[SpanSum] = []
    outcomes = await asyncio.gather(
        *(
            store.finalize(
                share,
                now_us=time.time_ns() // 1000,
                sampler=sampler,
                on_first=lambda shares: sums.extend(span_sums(shares)),
            )
            for share in shares_of(due, getattr(store, "concurrent_finalizes", 1))
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


async def _serve(settings: Settings, requests: BinaryIO, answers: BinaryIO) -> None:
    try:
        store = await open_store(settings, checkpoints=False)  # the worker's own connection checkpoints
    except Exception as exc:
        _write(answers, Ready(error=f"{type(exc).__name__}: {exc}"))
        return
    sampler = sampler_for(settings)
    try:
        _write(answers, Ready())
        async for message in _requests(requests):
            if not isinstance(message, Round):
                answer = RoundDone(due=0, finalized=0, error=f"unexpected {type(message).__name__}")
            else:
                try:
                    answer = await _round(store, sampler, message)
                except Exception as exc:  # the store failed (finding the due traces): the traces stay due
                    answer = RoundDone(due=0, finalized=0, error=f"{type(exc).__name__}: {exc}")
            _write(answers, answer)
    finally:
        await store.close()


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
    start = _read(requests)
    if not isinstance(start, Start):
        return 2
    settings = start.settings
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    from ingest.worker import tuned_gc  # here: ingest.worker imports this module

    with tuned_gc():
        asyncio.run(_serve(settings, requests, answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
