"""The worker's garbage-collector settings: applied inside, and everything restored after, even when the
worker fails."""

from __future__ import annotations

import gc

import pytest

from shared.gc_tuning import GC_THRESHOLDS, tuned_gc


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
