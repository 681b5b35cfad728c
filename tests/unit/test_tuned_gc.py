"""The worker's garbage-collector settings: applied inside, and everything restored after, even when the
worker fails."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from shared import gc_tuning
from shared.gc_tuning import GC_THRESHOLDS, arrow_on_malloc, tuned_gc

ROOT = Path(__file__).resolve().parents[2]


def test_thresholds_and_freeze_inside_and_restored_after() -> None:
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    with tuned_gc():
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # the objects alive at the start are never scanned again
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_restored_when_the_worker_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), tuned_gc():
        raise RuntimeError("the worker stopped")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


ARENAS_OF_THREADS = """
import ctypes, sys, threading
from shared.gc_tuning import cap_malloc_arenas
capped = sys.argv[1] == "capped"
if capped:
    assert cap_malloc_arenas(1)
barrier = threading.Barrier(6)
def allocate():
    barrier.wait()
    kept = [bytearray(200_000) for _ in range(20)]  # malloc'd by this thread, past pymalloc's sizes
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" paragraph an arena, on stderr
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")
@pytest.mark.parametrize("mode", ["capped", "default"])
def test_capped_arenas_are_shared_by_threads(mode: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ARENAS_OF_THREADS, mode], capture_output=True, text=True, cwd=ROOT, check=True
    )
    arenas = done.stderr.count("Arena ")
    if mode == "capped":
        assert arenas == 1
    else:
        assert arenas > 1  # six threads allocating at once get arenas of their own


FREED_INSIDE_THE_HEAP = """
import re, sys
from pathlib import Path
from shared.gc_tuning import trim_malloc
def rss_kib():
    return int(re.search(r"VmRSS:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
freed = [bytearray(60_000) for _ in range(2_000)]  # 120 MB malloc'd on the heap (below the mmap threshold)
pinned = bytearray(60_000)  # lives on above them: free() alone cannot shrink the heap's top
del freed
before = rss_kib()
trimmed = trim_malloc()
print(trimmed, before - rss_kib())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_trim_gives_back_pages_freed_inside_the_heap() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FREED_INSIDE_THE_HEAP], capture_output=True, text=True, cwd=ROOT, check=True
    )
    trimmed, released_kib = done.stdout.split()
    assert trimmed == "True"
    assert int(released_kib) > 100_000  # most of the 120 MB freed below the pinned block


async def test_trimmer_trims_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []

    def trimmed() -> bool:
        calls.append(None)
        return True

    monkeypatch.setattr(gc_tuning, "trim_malloc", trimmed)
    clock = [100.0]
    trim = gc_tuning.Trimmer(30.0, clock=lambda: clock[0])
    await trim()
    assert calls == []  # not at once: the interval counts from its start
    clock[0] += 30.0
    await trim()
    await trim()
    assert len(calls) == 1
    clock[0] += 29.0
    await trim()
    assert len(calls) == 1
    clock[0] += 1.0
    await trim()
    assert len(calls) == 2


def test_arrow_allocates_with_malloc_once_asked() -> None:
    import pyarrow as pa

    before = pa.default_memory_pool()
    try:
        assert arrow_on_malloc()
        assert pa.default_memory_pool().backend_name == "system"
        table = pa.table({"x": list(range(100_000))})
        assert pa.system_memory_pool().bytes_allocated() >= table.nbytes
    finally:
        pa.set_memory_pool(before)
