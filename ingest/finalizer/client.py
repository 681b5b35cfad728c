"""The worker's side of the finalizer process: starting it, its rounds, stopping it."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from ingest.finalizer.protocol import Message, Ready, Round, RoundDone, Start, frame, read_message
from shared.lifecycle import Backoff
from shared.settings import Settings
from shared.store import TraceStore

log = logging.getLogger("ingest.finalizer")

_ROOT: Final = str(Path(__file__).resolve().parents[2])
"""Put first on the child's import path: it runs the code this worker runs."""
START_RETRY_S: Final = 0.5
START_RETRY_MAX_S: Final = 10.0
"""After a start failed, the next is tried this long after (doubling up to the max): rounds in between fail
at once with the same error."""
STOP_TIMEOUT_S: Final = 10.0
"""How long a stopping worker waits for its finalizer to end a round in flight and exit."""


class FinalizerError(RuntimeError):
    """The finalizer process failed or is gone; the round's traces stay due."""


def separate_finalizer(settings: Settings, store: TraceStore) -> bool:
    """Whether a worker on ``store`` finalizes in a process of its own: when the settings ask for it
    (``TRACING_FINALIZE_PROCESS``, on by default) and another process can open the same store (a SQLite
    file or PostgreSQL; not an in-memory SQLite database, not Cassandra, whose rounds stay in the worker)."""
    return settings.finalize_process and store.shared_by_processes


class FinalizerProcess:
    """The worker's side: starts the child on the first round, and again after it failed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._backoff = Backoff(START_RETRY_S, START_RETRY_MAX_S)
        self._failed: tuple[float, str] | None = None
        """After a failed start: (when the next start may be tried, ``time.monotonic()`` s; the error)."""

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
            raise FinalizerError(failed[1])  # not a new process per round while the store is unreachable
        try:
            process = await self._start()
        except FinalizerError as exc:
            self._failed = (time.monotonic() + self._backoff.next(), str(exc))
            raise
        self._failed = None
        self._backoff.reset()
        return process

    async def _start(self) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ingest.finalizer.child",
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
        error = ready.error if isinstance(ready, Ready) else f"it answered {type(ready).__name__}"
        if error is not None:
            await self._kill()
            raise FinalizerError(f"finalizer process did not start: {error}")
        log.info("finalizer process %d started", process.pid)
        return process

    @staticmethod
    def _send(process: asyncio.subprocess.Process, message: Message) -> None:
        assert process.stdin is not None
        process.stdin.write(frame(message))

    @staticmethod
    async def _receive(process: asyncio.subprocess.Process) -> Message:
        assert process.stdin is not None and process.stdout is not None
        try:
            await process.stdin.drain()
            message = await read_message(process.stdout)
        except ConnectionError as exc:
            raise FinalizerError(f"finalizer process exited (status {process.returncode})") from exc
        if message is None:
            raise FinalizerError(f"finalizer process exited (status {process.returncode})")
        return message

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
                await self._pipelined(process, shards, limit, on_done, backlog)
            except BaseException:  # cancelled or broken mid-round: the next answer would be this one's
                await self._kill()
                raise

    async def _pipelined(
        self,
        process: asyncio.subprocess.Process,
        shards: Callable[[], Sequence[str]],
        limit: int,
        on_done: Callable[[RoundDone, float], None],
        more: bool,
    ) -> None:
        self._send(process, Round(shards=list(shards()), limit=limit))
        sent = [time.perf_counter()]  # when each request in flight was sent
        last = sent[0]
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
