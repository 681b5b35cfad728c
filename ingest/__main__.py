"""``python -m ingest``: run one ingest worker with settings from ``TRACING_*`` variables."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from ingest.worker import Worker
from shared.gc_tuning import arrow_on_malloc, cap_malloc_arenas, tuned_gc
from shared.kafka_access import KafkaAccessError
from shared.logs import configure_logging
from shared.settings import Settings, SettingsError
from shared.store import open_store


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = await open_store(settings, writer=True)
    try:
        worker = Worker(settings, store)
        logging.getLogger("ingest").info(
            "worker %s: group=%s topics=%s store=%s",
            worker.worker_id,
            settings.group,
            worker.topics,
            settings.store_url,
        )
        with tuned_gc():
            await worker.run(stop)
    finally:
        await store.close()


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"ingest: invalid setting: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    cap_malloc_arenas()  # before the store's threads start
    if settings.archive_url.strip():
        arrow_on_malloc()  # before pyarrow allocates
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(settings))
    except SettingsError as exc:  # found while opening the store (e.g. a driver that is not installed)
        print(f"ingest: invalid setting: {exc}", file=sys.stderr)
        return 2
    except KafkaAccessError as exc:  # the broker refuses these credentials: retrying would not help
        print(f"ingest: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
