"""``python -m ingest`` and ``python -m query_api`` with ``TRACING_STORE_URL=postgresql://...`` but no asyncpg
(the ``postgres`` extra not installed) stop with one line saying what to install, not a traceback.

asyncpg is installed here, so each child gets a ``sitecustomize`` (first on its ``PYTHONPATH``) whose import
hook makes ``import asyncpg`` fail exactly as a missing package does; nothing is uninstalled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK_ASYNCPG = '''
import sys


class _NoAsyncpg:
    """Finds nothing for asyncpg: its import fails as when the package is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "asyncpg" or name.startswith("asyncpg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoAsyncpg())
'''
HINT = "pip install 'kafka-tracing[postgres]'"


def _run(args: list[str], shim: Path | None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{shim}:{ROOT}" if shim is not None else str(ROOT),
        "TRACING_STORE_URL": "postgresql://tracing@127.0.0.1:1/tracing",
        "TRACING_KAFKA_BOOTSTRAP": "127.0.0.1:1",  # never reached: the store is opened first
        "TRACING_API_BIND": "127.0.0.1:0",
    }
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    (tmp_path / "sitecustomize.py").write_text(BLOCK_ASYNCPG)
    return tmp_path


def test_the_shim_hides_asyncpg_and_only_it(shim: Path) -> None:
    hidden = _run(["-c", "import asyncpg"], shim)
    assert hidden.returncode == 1 and "ModuleNotFoundError: No module named 'asyncpg'" in hidden.stderr
    assert _run(["-c", "import asyncpg, aiohttp, msgspec"], None).returncode == 0


@pytest.mark.parametrize("module", ["ingest", "query_api"])
def test_a_postgres_url_without_asyncpg_fails_with_one_line(shim: Path, module: str) -> None:
    result = _run(["-m", module], shim)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{module}: ") and "TRACING_STORE_URL" in lines[0] and HINT in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
