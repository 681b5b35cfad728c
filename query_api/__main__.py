"""``python -m query_api``: serve the API on ``TRACING_API_BIND`` (default 127.0.0.1:3000).

SIGTERM and SIGINT stop accepting connections, let requests in flight finish (up to 10 s), then close the
Kafka producer (flushing it) and the store. The garbage collector is tuned as the worker's
(:func:`shared.gc_tuning.tuned_gc`): a read allocates thousands of short-lived rows, and the objects
of every module loaded need not be scanned again by the collections they set off. The C allocator keeps
two arenas (:func:`shared.gc_tuning.cap_malloc_arenas`), not one per reading thread, and gives its free
pages back every 30 s; with an archive, pyarrow allocates with it too (:func:`shared.gc_tuning.arrow_on_malloc`).
"""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from shared.gc_tuning import arrow_on_malloc, cap_malloc_arenas, tuned_gc
from shared.kafka_access import KafkaAccessError
from shared.logs import configure_logging
from shared.settings import Settings, SettingsError

from .access_log import AccessLogger
from .app import create_app

SHUTDOWN_TIMEOUT_S = 10.0


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"query_api: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # as the worker: not a line per connection
    log = logging.getLogger("query_api")
    try:
        _serve(settings, log)
    except SettingsError as exc:  # found while opening the store (e.g. a driver that is not installed)
        print(f"query_api: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KafkaAccessError as exc:  # the broker refuses these credentials: retrying would not help
        print(f"query_api: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    log.info("stopped")


def _serve(settings: Settings, log: logging.Logger) -> None:
    host, port = settings.api_host_port
    cap_malloc_arenas()
    if settings.archive_url.strip():
        arrow_on_malloc()  # before pyarrow allocates
    with tuned_gc():
        web.run_app(
            create_app(settings),
            host=host,
            port=port,
            access_log_class=AccessLogger,
            access_log=logging.getLogger("query_api.access"),
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            handle_signals=True,
            print=lambda message: log.info("%s", message.strip()),
        )


if __name__ == "__main__":
    main()
