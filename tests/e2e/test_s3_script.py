"""``scripts/s3.sh``: the local S3-compatible server (S3Proxy, filesystem backend) the archive's tests and
benchmarks use, driven through every command on a free port in the test's temp dir, with a real S3 client
that signs its requests (pyarrow's ``S3FileSystem``, AWS Signature V4).

Its keys come from the environment at the first ``up`` and are reused from the state dir afterwards; a
wrong secret is refused; a SIGKILLed server is seen as stopped, and ``up`` again serves what was written
before; ``down --purge`` removes the state dir. The server is always stopped in the fixture's teardown.
"""

from __future__ import annotations

import random
from urllib.parse import parse_qs, urlsplit

import pytest
from pyarrow import fs

from tests.conftest import free_port
from tests.e2e.s3proxy import ACCESS_KEY, SECRET_KEY, S3Server, server

__all__ = ["server"]  # the fixture

REFUSED = r"ACCESS_DENIED|SIGNATURE_DOES_NOT_MATCH"

pytestmark = pytest.mark.timeout(900)  # the first `up` on a machine fetches ~57 MB of jars from Maven Central


def client(url: str, secret_key: str = SECRET_KEY, *, attempts: int = 3) -> fs.S3FileSystem:
    """pyarrow's S3 filesystem on the endpoint and region of an archive URL."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    endpoint = urlsplit(query["endpoint"])
    return fs.S3FileSystem(
        access_key=ACCESS_KEY,
        secret_key=secret_key,
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme,
        region=query["region"],
        connect_timeout=5,
        request_timeout=30,
        retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=attempts),
    )


def read(s3: fs.S3FileSystem, path: str) -> bytes:
    with s3.open_input_stream(path) as stream:
        data: bytes = stream.read()
        return data


def test_up_serves_signed_s3_requests_survives_kill_and_purges(server: S3Server) -> None:
    port = free_port()
    keys = {"TRACING_S3_ACCESS_KEY": ACCESS_KEY, "TRACING_S3_SECRET_KEY": SECRET_KEY}
    up = server.ok("up", "--port", str(port), env=keys)
    url = up.stdout.strip().splitlines()[-1]
    assert url == f"s3://tracing/?endpoint=http://127.0.0.1:{port}&region=us-east-1"
    assert f"export AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY}" in up.stderr
    again = server.ok("up")  # idempotent: the running server, its port and keys from the state dir
    assert "already running" in again.stderr
    assert again.stdout.strip().splitlines()[-1] == url
    assert server.ok("url").stdout.strip() == url

    s3 = client(url)
    payload = random.Random(30).randbytes(3 * 1024 * 1024 + 17)
    with s3.open_output_stream("tracing/blocks/one.bin") as out:
        out.write(payload)
    assert read(s3, "tracing/blocks/one.bin") == payload
    listed = s3.get_file_info(fs.FileSelector("tracing", recursive=True))
    assert [(i.path, i.size) for i in listed if i.type == fs.FileType.File] == [
        ("tracing/blocks/one.bin", len(payload))
    ]
    assert (server.state / "data" / "tracing" / "blocks" / "one.bin").read_bytes() == payload  # one file an object

    wrong = client(url, "not-the-secret", attempts=1)
    with pytest.raises(OSError, match=REFUSED):
        read(wrong, "tracing/blocks/one.bin")
    with pytest.raises(OSError, match=REFUSED), wrong.open_output_stream("tracing/refused.bin") as out:
        out.write(b"must not land")
    assert s3.get_file_info("tracing/refused.bin").type == fs.FileType.NotFound

    assert "running" in server.ok("status").stdout
    server.ok("kill")
    stopped = server.run("status")
    assert stopped.returncode == 1 and "stopped" in stopped.stdout, stopped
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        read(client(url, attempts=1), "tracing/blocks/one.bin")

    restarted = server.ok("up")  # same port and keys, from the state dir
    assert restarted.stdout.strip().splitlines()[-1] == url
    assert read(s3, "tracing/blocks/one.bin") == payload

    server.ok("down", "--purge")
    assert not server.state.exists()
