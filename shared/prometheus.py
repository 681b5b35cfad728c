"""What the worker's and the API's metrics pages share: the families they keep as plain numbers, handed to
prometheus-client when scraped, its text exposition of them (format 0.0.4, the header every Prometheus
accepts; each label set's lines rendered by the client once, :class:`Page`) and the latency buckets.
docs/adr/0009-prometheus-client.md says why the library and what it measured.

The numbers are plain ints and floats without locks: every call that changes them and every scrape runs
on the process's event loop. Label values are the caller's to keep bounded (route templates,
partitions), never raw user input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Final

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Metric, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

number: Final[Callable[[float], str]] = floatToGoString
"""A value as the client writes it in a page (``1.0``, ``+Inf``, ``1e+06``)."""

Series = tuple[str, tuple[tuple[str, str], ...]]
"""A sample's name and its labels (sorted pairs)."""

LabelValues = tuple[str, ...]
"""One label set: its values in the order of the family's label names."""

Row = tuple[LabelValues, Sequence[float]]
"""A label set and the values of its samples, in the order prometheus-client lists them."""

LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Family(ABC, Collector):
    """One metric family whose numbers the process keeps itself; when scraped, prometheus-client's
    ``*MetricFamily`` of them (so a call that counts takes no lock and builds no sample)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)

    @abstractmethod
    def rows(self) -> list[Row]:
        """Every label set (sorted) with its samples' values now."""

    @abstractmethod
    def metric(self, rows: Iterable[Row]) -> Metric:
        """The client's family of these rows."""

    def collect(self) -> Iterator[Metric]:
        yield self.metric(self.rows())


class Values(Family):
    """A counter or a gauge family whose values are read when scraped (``read``: label set -> value)."""

    def __init__(
        self,
        kind: type[CounterMetricFamily | GaugeMetricFamily],
        name: str,
        documentation: str,
        read: Callable[[], Mapping[LabelValues, float]],
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__(name, documentation, labels)
        self._kind = kind
        self._read = read

    def rows(self) -> list[Row]:
        return [(key, (value,)) for key, value in sorted(self._read().items())]

    def metric(self, rows: Iterable[Row]) -> Metric:
        family = self._kind(self.name, self.documentation, labels=self.labels)
        for key, (value,) in rows:
            family.add_metric(key, value)
        return family


class Buckets:
    """One histogram series: observations per bucket (the first bound >= the value, the last one +Inf)
    and their sum, as prometheus-client's ``Histogram`` buckets them."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class Histograms(Family):
    """A histogram family: one :class:`Buckets` per label set (an unlabelled family has its one series
    from the start, at zero, as the client's ``Histogram`` has)."""

    def __init__(self, name: str, documentation: str, bounds: Sequence[float], labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labels)
        self.bounds = tuple(bounds)
        self._le = [number(bound) for bound in self.bounds] + ["+Inf"]
        self.series: dict[LabelValues, Buckets] = {}
        if not self.labels:
            self.at(())

    def at(self, key: LabelValues) -> Buckets:
        """The series of this label set, added at zero when new."""
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Buckets(self.bounds)
        return series

    def rows(self) -> list[Row]:
        """Per label set: the cumulative bucket counts, the count and the sum."""
        rows: list[Row] = []
        for key, series in sorted(self.series.items()):
            cumulative: list[float] = list(accumulate(series.counts))
            cumulative += (cumulative[-1], series.total)
            rows.append((key, cumulative))
        return rows

    def metric(self, rows: Iterable[Row]) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        buckets = len(self._le)
        for key, values in rows:
            family.add_metric(key, list(zip(self._le, values[:buckets], strict=True)), values[buckets + 1])
        return family


def registry(families: Iterable[Family]) -> CollectorRegistry:
    """A registry of these families, in this order."""
    r = CollectorRegistry(auto_describe=False)
    for family in families:
        r.register(family)
    return r


def render(registry: Collector) -> str:
    """The collector's metrics in the Prometheus text format (prometheus-client's ``generate_latest``)."""
    return generate_latest(registry).decode()


class _Just:
    """A collector of one family, for :func:`render`."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> list[Metric]:
        return [self._metric]


class Page:
    """The page of these families, as prometheus-client renders it, without rendering each line anew.

    On every scrape ``generate_latest`` validates and escapes each label name and value of each sample
    (two regular expressions and a replace chain per label), four fifths of a scrape of the worker's
    page. A label set's lines differ from one scrape to the next only in their values, so the client
    renders each family's header and each new label set's lines once, and a scrape joins each line's
    text before the value, kept, with the value of now as the client formats it (``floatToGoString``).
    Tests hold the page equal, byte for byte, to :func:`render` of :attr:`registry`."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.families = list(families)
        self.registry = registry(self.families)
        self._headers = [render(_Just(family.metric([]))) for family in self.families]
        self._starts: list[dict[LabelValues, list[str]]] = [{} for _ in self.families]

    def render(self) -> str:
        out: list[str] = []
        for family, header, starts in zip(self.families, self._headers, self._starts, strict=True):
            out.append(header)
            for key, values in family.rows():
                start = starts.get(key)
                if start is None:
                    start = starts[key] = _line_starts(family, key, len(values))
                out += [f"{text}{number(value)}\n" for text, value in zip(start, values, strict=True)]
        return "".join(out)


def _line_starts(family: Family, key: LabelValues, samples: int) -> list[str]:
    """The text before the value of each of this label set's lines, as the client renders them (the
    family's header is the first two lines; a label value holds no raw line feed, the client escapes it)."""
    lines = render(_Just(family.metric([(key, [0.0] * samples)]))).split("\n")[2:-1]
    if len(lines) != samples:
        raise ValueError(f"{family.name}{key}: {len(lines)} lines for {samples} samples")
    return [line[: line.rindex(" ") + 1] for line in lines]


def parse(text: str) -> dict[Series, float]:
    """A page's samples (prometheus-client's parser, so any label order or number form): series -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
