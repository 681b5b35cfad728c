"""What a test needs from the machine (a broker, a database, a browser, a tool, a build): when it is
missing, the test skips, except with ``CI=true``, where it fails. CI never passes by skipping."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI") == "true"


def missing(message: str) -> NoReturn:
    """A prerequisite is missing: fail under CI, skip elsewhere, saying what is missing."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_cassandra_driver() -> None:
    """The driver of the ``cassandra`` extra is installed (else :func:`missing`)."""
    try:
        import acsylla  # noqa: F401
    except ImportError:
        missing("no Cassandra driver: pip install -e '.[cassandra]'")
