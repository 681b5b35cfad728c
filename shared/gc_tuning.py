"""The garbage collector's settings while a worker (or its finalizer process) or the API runs."""

from __future__ import annotations

import contextlib
import gc
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
