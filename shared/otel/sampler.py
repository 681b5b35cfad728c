"""A remote sampler for the OpenTelemetry Python SDK: per-operation probabilities polled from the query
API's ``/api/sampling`` (Jaeger's remote sampling protocol), as the Go SDK's sampler does.

Needs the ``otel`` extra::

    from opentelemetry.sdk.trace import TracerProvider
    from shared.otel import RemoteSampler

    sampler = RemoteSampler("checkout", "http://tracing-api:3000/api/sampling", interval_s=60)
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}), sampler=sampler)

It behaves as OpenTelemetry Go's ``samplers/jaegerremote`` (contrib ``sampler.go``, ``sampler_remote.go``):

* parent-based: a span with a parent follows its parent's decision (the SDK's ``ParentBased``); a root span
  is decided by its operation's sampler;
* per operation: ``TraceIdRatioBased`` at the operation's probability, or the default probability for an
  operation the strategy does not list (at most ``max_operations`` of them, then the default sampler), each
  with a lower bound: a rate limiter keeps ``defaultLowerBoundTracesPerSecond`` of the spans the probability
  drops (its balance starts full, so an operation's first span is kept);
* a sampled root span gets ``jaeger.sampler.type`` (``probabilistic``, or ``ratelimiting`` when the lower
  bound kept it) and ``jaeger.sampler.param`` (the probability, or the lower bound): what the workers read to
  weigh each trace by the probability it was sampled with;
* the strategy is fetched at once and then every ``interval_s`` by a daemon thread; until the first answer,
  and whenever a fetch fails (logged), the last strategy stays (at first: every root at ``initial_probability``).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from shared.remote_sampling import (
    INITIAL_PROBABILITY,
    RESPONSE_DECODER,
    ProbabilisticSampling,
    SamplingStrategyResponse,
)

log = logging.getLogger("shared.otel.sampler")

TYPE_KEY: Final = "jaeger.sampler.type"
PARAM_KEY: Final = "jaeger.sampler.param"
MAX_OPERATIONS: Final = 2000
"""The Go sampler's ``defaultMaxOperations``."""


class RateLimiter:
    """Up to ``per_second`` credits a second, at most ``max_balance`` saved (starts full). Thread-safe."""

    def __init__(self, per_second: float, max_balance: float) -> None:
        self._lock = threading.Lock()
        self.per_second = per_second
        self._max_balance = max_balance
        self._balance = max_balance if per_second > 0 else 0.0
        self._last = time.monotonic()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._balance = min(self._max_balance, self._balance + (now - self._last) * self.per_second)
            self._last = now
            if self._balance >= 1.0:
                self._balance -= 1.0
                return True
            return False


class OperationSampler:
    """One operation's probability with its lower bound (Go: ``guaranteedThroughputProbabilisticSampler``)."""

    def __init__(self, probability: float, lower_bound_tps: float, limiter: RateLimiter | None = None) -> None:
        self.probability = min(1.0, max(0.0, probability))
        self._ratio = TraceIdRatioBased(self.probability)
        self._picked: Mapping[str, str | float] = {TYPE_KEY: "probabilistic", PARAM_KEY: self.probability}
        self._bounded: Mapping[str, str | float] = {TYPE_KEY: "ratelimiting", PARAM_KEY: lower_bound_tps}
        same = limiter is not None and limiter.per_second == lower_bound_tps
        self.limiter = limiter if same and limiter else RateLimiter(lower_bound_tps, max(lower_bound_tps, 1.0))

    def decide(self, trace_id: int) -> Mapping[str, str | float] | None:
        """The sampler attributes of a sampled trace; None when it is dropped."""
        if trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._ratio.bound:
            self.limiter.take()  # a probabilistic pick uses the lower bound's credit too, as in Go
            return self._picked
        if self.limiter.take():
            return self._bounded
        return None


class Strategy:
    """One polled strategy: the operations' samplers and the default for the others."""

    def __init__(self, response: SamplingStrategyResponse, previous: Strategy | None, max_operations: int) -> None:
        per_op = response.operation_sampling
        kept = previous.operations if previous is not None else {}
        if per_op is not None:
            self.default = per_op.default_sampling_probability
            self.lower_bound = per_op.default_lower_bound_traces_per_second
            strategies = {s.operation: s.probabilistic_sampling.sampling_rate for s in per_op.per_operation_strategies}
        else:
            probabilistic = response.probabilistic_sampling
            self.default = probabilistic.sampling_rate if probabilistic is not None else INITIAL_PROBABILITY
            self.lower_bound, strategies = 0.0, {}
        self.operations: dict[str, OperationSampler] = {
            name: OperationSampler(p, self.lower_bound, _limiter(kept.get(name)))
            for name, p in list(strategies.items())[:max_operations]
        }
        self._fallback = OperationSampler(self.default, 0.0)
        self._max_operations = max_operations
        self._lock = threading.Lock()

    def sampler_for(self, operation: str) -> OperationSampler:
        sampler = self.operations.get(operation)
        if sampler is not None:
            return sampler
        with self._lock:
            sampler = self.operations.get(operation)
            if sampler is None:
                if len(self.operations) >= self._max_operations:
                    return self._fallback
                sampler = self.operations[operation] = OperationSampler(self.default, self.lower_bound)
            return sampler


def _limiter(sampler: OperationSampler | None) -> RateLimiter | None:
    return sampler.limiter if sampler is not None else None


class _RootSampler(Sampler):
    """The decision for root spans, by operation, from the latest strategy."""

    def __init__(self, initial_probability: float, max_operations: int) -> None:
        initial = SamplingStrategyResponse(
            probabilistic_sampling=ProbabilisticSampling(sampling_rate=initial_probability)
        )
        self.strategy = Strategy(initial, None, max_operations)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        picked = self.strategy.sampler_for(name).decide(trace_id)
        parent_state = get_current_span(parent_context).get_span_context().trace_state
        if picked is None:
            return SamplingResult(Decision.DROP, None, parent_state)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {**(attributes or {}), **picked}, parent_state)

    def get_description(self) -> str:
        return "RemoteSamplerRoot"


class RemoteSampler(ParentBased):
    """Parent-based, with per-operation probabilities for root spans from ``url`` (``?service=`` added),
    polled every ``interval_s`` (see the module); ``token``: the bearer token of an API that requires one
    for reads (``TRACING_READ_TOKENS``). :meth:`close` stops the polling."""

    def __init__(
        self,
        service: str,
        url: str = "http://127.0.0.1:3000/api/sampling",
        *,
        interval_s: float = 60.0,
        timeout_s: float = 5.0,
        token: str | None = None,
        initial_probability: float = INITIAL_PROBABILITY,
        max_operations: int = MAX_OPERATIONS,
    ) -> None:
        self._roots = _RootSampler(initial_probability, max_operations)
        super().__init__(self._roots)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"remote sampler: expected an http(s) URL, got {url!r}")
        self._url = f"{url}?{urllib.parse.urlencode({'service': service})}"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._interval_s, self._timeout_s, self._max_operations = interval_s, timeout_s, max_operations
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="remote-sampler", daemon=True)
        self._thread.start()

    def get_description(self) -> str:
        return f"RemoteSampler{{{self._url}}}"

    @property
    def strategy(self) -> Strategy:
        return self._roots.strategy

    def update(self) -> bool:
        """Fetch the strategy now; False (logged) when the endpoint cannot be read."""
        try:
            request = urllib.request.Request(self._url, headers=self._headers)  # noqa: S310 (checked: http(s))
            with urllib.request.urlopen(request, timeout=self._timeout_s) as answer:  # noqa: S310 (checked: http(s))
                response = RESPONSE_DECODER.decode(answer.read())
        except Exception as exc:  # an unreachable API or a bad answer: keep sampling as before
            log.warning("remote sampler: cannot read %s: %s", self._url, exc)
            return False
        self._roots.strategy = Strategy(response, self._roots.strategy, self._max_operations)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self._timeout_s + 1)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.update()
            self._stop.wait(self._interval_s)
