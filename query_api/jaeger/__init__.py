"""Jaeger-compatible read APIs, so the Jaeger UI, Grafana's Jaeger data source and Jaeger API clients work
against this store unchanged.

* :mod:`query_api.jaeger.classic`: the classic ``/api/`` API (Jaeger's UI model in a
  ``{data, total, limit, offset, errors}`` envelope);
* :mod:`query_api.jaeger.v3`: the current ``/api/v3/`` API (OTLP JSON);
* :mod:`query_api.jaeger.common`: Jaeger's parameter syntaxes (Go durations, RFC 3339 times), the search
  building and the rendering both share;
* :mod:`query_api.jaeger.metrics`: the metrics API (the Monitor tab) computed from the store's rollups;
* :mod:`query_api.jaeger.analytics`: the deep dependency graph the Jaeger UI asks
  ``/analytics/v1/dependencies`` for, from the dependency rollups.

The views parse and render; what they read comes from :class:`~query_api.services.jaeger.JaegerService`.
Their routes are registered with every other route in :func:`query_api.routes.setup_routes`.

Read tokens apply to these routes as to every other GET. Where the answers differ from Jaeger's (ids,
search semantics, span kinds of operations), the module docstrings say so.
"""
