"""The query services: what each group of views asks, answered from the store (handler -> service -> store).

No view touches the store; no service knows HTTP beyond raising :mod:`query_api.errors`. One module per
service:

* :mod:`.traces`: one trace (spans, tree, analysis) and trace search (:class:`TraceService`);
* :mod:`.writes`: the write endpoints' events published to Kafka (:class:`WriteService`);
* :mod:`.monitoring`: ``/stats`` and the per-operation statistics and time series (:class:`MonitorService`);
* :mod:`.critical_paths`: critical paths across traces (:class:`CriticalPathService`);
* :mod:`.sampling`: remote sampling strategies (:class:`SamplingService`);
* :mod:`.jaeger`: what both Jaeger-compatible APIs read (:class:`JaegerService`);
* :mod:`.clock`: the clock the services take (microseconds since the epoch).
"""

from __future__ import annotations

from .critical_paths import CriticalPathService
from .jaeger import JaegerService
from .monitoring import MonitorService
from .sampling import SamplingService
from .traces import TraceService
from .writes import WriteService

__all__ = ["CriticalPathService", "JaegerService", "MonitorService", "SamplingService", "TraceService", "WriteService"]
