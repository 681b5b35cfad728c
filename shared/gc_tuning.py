"""The garbage collector's settings while a worker (or its finalizer process) or the API runs, and the C
allocator's arenas of the API."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
from collections.abc import Iterator
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
API_ARENAS: Final = 2


def cap_malloc_arenas(arenas: int = API_ARENAS) -> bool:
    """Keep glibc's ``malloc`` to ``arenas`` arenas in this process (it makes up to 8 per core, one for each
    thread that allocates at once, each a 64 MiB reserve that fills with what its thread freed); whether
    it was set (not glibc: nothing to do). The API reads on a pool of threads: in the hour's soak its RSS
    grew in steps in threads' arenas, while its reads alone and SQLite's page cache stayed flat
    (bench/README.md, "Soak"). Python's own small objects are not in these arenas."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
