"""Where the archive is: ``TRACING_ARCHIVE_URL`` parsed and checked.

* ``file:///path/to/folder``: a folder of this machine (objects are files below it).
* ``s3://bucket/prefix?endpoint=http://host:port&region=us-east-1``: an S3-compatible service. ``endpoint``
  is optional (AWS when unset), ``region`` too (``us-east-1``). Credentials come from the URL's user info
  (``s3://KEY:SECRET@bucket/...``, each part percent-encoded) or else from ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``); without either, requests go unsigned.

Errors never repeat the URL's secret: :meth:`ArchiveLocation.display` is the URL without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

QUERY_KEYS: Final = frozenset({"endpoint", "region"})


class ArchiveUrlError(ValueError):
    """``TRACING_ARCHIVE_URL`` is malformed; the message says why (without any secret)."""


class ArchiveLocation(msgspec.Struct, frozen=True, kw_only=True):
    scheme: Literal["file", "s3"]
    bucket: str
    """The bucket (s3), or the folder's absolute path (file)."""
    prefix: str
    """Prepended to every object name (s3): empty, or ending with ``/``."""
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = msgspec.field(default=None)
    session_token: str | None = None

    @classmethod
    def parse(cls, url: str, environ: Mapping[str, str] | None = None) -> ArchiveLocation:
        env = os.environ if environ is None else environ
        try:
            parts = urlsplit(url)
            port = parts.port  # checks it
        except ValueError as exc:
            raise ArchiveUrlError(f"not a URL: {exc}") from None
        if parts.scheme == "file":
            if parts.netloc or not parts.path.startswith("/") or parts.query:
                raise ArchiveUrlError("expected file:///absolute/path (no host, no query)")
            return cls(scheme="file", bucket=unquote(parts.path).rstrip("/") or "/", prefix="")
        if parts.scheme != "s3":
            raise ArchiveUrlError(
                f"expected file:///path or s3://bucket/prefix?endpoint=...&region=..., got a "
                f"{parts.scheme or 'relative'} URL"
            )
        if port is not None or not parts.hostname:
            raise ArchiveUrlError("expected s3://bucket/prefix: a bucket name, no port")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - QUERY_KEYS)
        if unknown:
            raise ArchiveUrlError(f"unknown query parameter {unknown[0]!r} (known: endpoint, region)")
        endpoint = query.get("endpoint", [None])[-1]
        if endpoint is not None:
            target = urlsplit(endpoint)
            if target.scheme not in ("http", "https") or not target.hostname:
                raise ArchiveUrlError("endpoint: expected http://host:port or https://host")
        prefix = unquote(parts.path).strip("/")
        key, secret = parts.username, parts.password
        if (key is not None or secret is not None) and not (key and secret):
            raise ArchiveUrlError("credentials in the URL need both parts: s3://KEY:SECRET@bucket/...")
        if key is None:
            key, secret = env.get("AWS_ACCESS_KEY_ID") or None, env.get("AWS_SECRET_ACCESS_KEY") or None
            if (key is None) != (secret is None):
                raise ArchiveUrlError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: set both or neither")
        return cls(
            scheme="s3",
            bucket=parts.hostname,
            prefix=prefix + "/" if prefix else "",
            endpoint=endpoint,
            region=query.get("region", ["us-east-1"])[-1] or "us-east-1",
            access_key_id=unquote(key) if key else None,
            secret_access_key=unquote(secret) if secret else None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )

    def display(self) -> str:
        """The location as a URL without credentials (for logs and errors)."""
        if self.scheme == "file":
            return f"file://{self.bucket}"
        query = f"?endpoint={self.endpoint}&region={self.region}" if self.endpoint else f"?region={self.region}"
        return f"s3://{self.bucket}/{self.prefix}{query}"

    def __repr__(self) -> str:
        return f"ArchiveLocation({self.display()!r})"
