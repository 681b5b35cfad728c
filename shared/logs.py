"""Logging as every process of the project configures it (``python -m ingest``, ``python -m query_api``,
the worker's finalizer process)."""

from __future__ import annotations

import logging
import sys
from typing import Final

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    """Log records at ``level`` (``TRACING_LOG_LEVEL``: DEBUG, INFO, WARNING or ERROR) and above to stderr,
    one line each: time, level, logger name, message. Does nothing when the root logger already has a
    handler (as :func:`logging.basicConfig`)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
