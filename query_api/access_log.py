"""One canonical log line per request: ``method=GET path=/stats status=200 ms=1.4``."""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "method=%s path=%s status=%d ms=%.1f", request.method, request.path, response.status, time * 1000
        )
