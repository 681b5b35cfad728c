"""``make run`` (``tracing dev``) archives to a folder beside its SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings
from tracing_cli import dev_archive_url


def test_the_dev_archive_is_the_folder_beside_the_sqlite_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    url = dev_archive_url(Settings.from_env({}).store_url)
    assert url == (tmp_path / "data" / "archive").as_uri()
    location = Settings.from_env({}, archive_url=url).archive_location()
    assert location is not None and location.scheme == "file"
    assert dev_archive_url("sqlite:////srv/t/traces.db") == "file:///srv/t/archive"
    assert dev_archive_url("sqlite:///:memory:") is None
    assert dev_archive_url("postgresql://localhost/tracing") is None
