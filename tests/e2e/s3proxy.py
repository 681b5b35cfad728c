"""S3Proxy through ``scripts/s3.sh`` for the tests that need a real S3-compatible server: :class:`S3Server`
drives the script on a state dir of the test's own; the :func:`server` fixture stops whatever runs there and
removes the dir after the test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.prerequisites import missing

S3_SH = ROOT / "scripts" / "s3.sh"
ACCESS_KEY = "archive-test"
SECRET_KEY = "archive-test/Secret+1"


class S3Server:
    """The server of ``scripts/s3.sh`` whose state dir is ``state``."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACING_S3_")}
        return subprocess.run(
            ["bash", str(S3_SH), *args, "--dir", str(self.state)],
            capture_output=True,
            text=True,
            timeout=600,
            env=clean | (env or {}),
        )

    def ok(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, env=env)
        assert result.returncode == 0, (args, result.stderr[-3000:])
        return result


@pytest.fixture
def server(tmp_path: Path) -> Iterator[S3Server]:
    """A state dir for ``scripts/s3.sh``; whatever runs there is stopped and the dir removed after."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            missing(f"no {tool}: scripts/s3.sh runs S3Proxy from Maven Central jars on Java 17")
    s3 = S3Server(tmp_path / "s3")
    try:
        yield s3
    finally:
        s3.run("down", "--purge")
