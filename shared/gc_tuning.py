"""The garbage collector's settings while a worker (or its finalizer process) or the API runs, and the C
allocator's arenas and trims of these processes."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import platform
import time
from collections.abc import Callable, Iterator
from typing import Final

GC_THRESHOLDS: Final = (50_000, 20, 100)
"""The collector's thresholds while a worker runs (CPython's default: 700, 10, 10). Decoding a fetch
allocates millions of short-lived containers; the spans a worker keeps hold no reference cycles and are
not tracked (msgspec ``gc=False`` Structs), so rare collections lose nothing and save most of their CPU.
Measured in bench/drain.py."""


@contextlib.contextmanager
def tuned_gc() -> Iterator[None]:
    """Run a worker with :data:`GC_THRESHOLDS`, the objects alive at its start frozen (never scanned
    again); on exit the previous thresholds are restored and every frozen object is thawed (a host that
    froze objects of its own before would see them thawed too). ``python -m ingest`` runs in it."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


M_ARENA_MAX: Final = -8
"""glibc's ``mallopt`` parameter for the most arenas its ``malloc`` keeps (``malloc.h``)."""
MALLOC_ARENAS: Final = 2
API_ARENAS: Final = MALLOC_ARENAS


def _glibc() -> ctypes.CDLL | None:
    """This process's C library, if it is glibc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Keep glibc's ``malloc`` to ``arenas`` arenas in this process (it makes up to 8 per core, one for each
    thread that allocates at once, each a 64 MiB reserve that fills with what its thread freed); whether
    it was set (not glibc: nothing to do). The API reads on a pool of threads, a worker writes on its
    store's and checkpoint's threads and plans small purge rounds on others: in the soak their RSS grew in
    steps in threads' arenas, while what they hold stayed flat (bench/README.md, "Soak"). Python's own
    small objects are not in these arenas. Called first thing by ``python -m query_api``,
    ``python -m ingest`` and the finalizer process, before their threads start."""
    libc = _glibc()
    try:
        return libc is not None and bool(libc.mallopt(M_ARENA_MAX, arenas))
    except AttributeError:
        return False


def trim_malloc() -> bool:
    """Give the free pages of glibc's ``malloc`` back to the system (``malloc_trim(0)``: every arena,
    the free pages inside the heap too, not only its top); whether any was (not glibc: nothing to do). A
    purge round or a batch of finalizations frees tens of MiB of chunks at once, among objects that live
    on, so without it the process keeps them resident until the next round reuses them."""
    libc = _glibc()
    try:
        return libc is not None and bool(libc.malloc_trim(0))
    except AttributeError:
        return False


TRIM_EVERY_S: Final = 30.0
"""How often a worker's finalize loop and its finalizer process trim (:class:`Trimmer`)."""


class Trimmer:
    """:func:`trim_malloc` at most every ``every_s`` seconds, for a loop of rounds that free memory each:
    ``await trimmer()``. On a thread: it takes milliseconds of CPU (tens after a large round freed
    hundreds of MiB: a system call per free page range), more in wall time on a busy host, which the
    event loop need not wait for (the call releases the interpreter lock)."""

    def __init__(self, every_s: float = TRIM_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._at = clock()

    def due(self) -> bool:
        """Whether a trim is due now (then the next is due ``every_s`` from now)."""
        now = self._clock()
        if now - self._at < self.every_s:
            return False
        self._at = now
        return True

    async def __call__(self) -> None:
        if self.due():
            await asyncio.to_thread(trim_malloc)


def arrow_on_malloc() -> bool:
    """Have pyarrow allocate with the C library's ``malloc`` (capped and trimmed as above) instead of its
    bundled mimalloc; whether it was set (pyarrow not installed: nothing to do). Call it first thing in a
    process that reads or writes archive blocks, before pyarrow allocates. Measured on the soak's archive
    (a loop of reads by id that miss the hot store, so read the row groups their ids' filters let
    through): resident memory 181.6 MiB after the first read with mimalloc, 101.7 with ``malloc``, pyarrow
    holding 18-20 MiB live in both; the API with mimalloc grew 112 → 276 MiB over the soak's first 16
    minutes (bench/README.md, "Soak")."""
    try:
        import pyarrow
    except ImportError:
        return False
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    return True


async def trim_every(every_s: float = TRIM_EVERY_S) -> None:
    """:func:`trim_malloc` every ``every_s`` seconds on a thread, until cancelled: for a process whose work
    comes in requests, not rounds (the API)."""
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(trim_malloc)
