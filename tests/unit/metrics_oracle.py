"""FROZEN TEST ORACLE: ``span_sums`` (the worker's span metrics of first finalizations) as it was before its
loop moved into the compiled core. Do not edit.

A verbatim copy of the function from ``ingest/metrics.py``, kept only as the reference the rewrite must
equal, on every input (``tests/unit/test_span_sums.py``). Never import it outside the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ingest.metrics import SPAN_KINDS, SpanSum
from shared.store.rollups import Contribution


def span_sums(shares: Sequence[Contribution]) -> list[SpanSum]:
    """The spans of these first finalizations summed per label set (a round holds hundreds of traces of a
    few operations): what :meth:`SpanMetrics.add` counts, computed where the round ran."""
    sums: dict[tuple[str, str, str, str], list[Any]] = {}
    for share in shares:
        w = share.weight  # the trace's adjusted count: each span counts this many times
        for service, operation, kind, spans, errors, total, _, _, hist, error_total, error_hist in share.ops:
            kind_label = SPAN_KINDS.get(kind, "SPAN_KIND_UNSPECIFIED")
            if spans > errors:
                row = sums.get((service, operation, kind_label, "STATUS_CODE_UNSET"))
                if row is None:
                    row = sums[service, operation, kind_label, "STATUS_CODE_UNSET"] = [0, 0, {}]
                row[0] += w * (spans - errors)
                row[1] += w * (total - error_total)
                counts = row[2]
                for b, n in hist.items():
                    counts[b] = counts.get(b, 0) + w * (n - error_hist.get(b, 0))
            if errors:
                row = sums.get((service, operation, kind_label, "STATUS_CODE_ERROR"))
                if row is None:
                    row = sums[service, operation, kind_label, "STATUS_CODE_ERROR"] = [0, 0, {}]
                row[0] += w * errors
                row[1] += w * error_total
                counts = row[2]
                for b, n in error_hist.items():
                    counts[b] = counts.get(b, 0) + w * n
    return [(*labels, count, total_us, counts) for labels, (count, total_us, counts) in sums.items()]
