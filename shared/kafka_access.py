"""Whether the broker lets this client in, told apart from whether it is there at all.

A broker that is not up yet (or restarting) is waited for: the callers retry. A broker that refuses this
client (a wrong password, a certificate one side does not trust, a missing ACL) refuses it again on every
retry, and aiokafka would log an ERROR per attempt without saying why. Such a refusal is a
:class:`KafkaAccessError`: one line naming the cause and the setting to check, which ``python -m ingest``
and ``python -m query_api`` print before they exit. It never holds a password.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable, Iterator

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)

from shared.settings import PREFIX, Settings

log = logging.getLogger("shared.kafka")

X509_V_ERR_HOSTNAME_MISMATCH = 62
TOPIC_AUTHORIZATION_ERRORS = {TopicAuthorizationFailedError.errno, ClusterAuthorizationFailedError.errno}


class KafkaAccessError(Exception):
    """The broker refuses this client for a reason that only a setting or an ACL can fix (retrying cannot).
    The message is one line: ``kafka: <cause>: <what to check>``; it never holds a secret."""

    def __init__(self, message: str) -> None:
        super().__init__(f"kafka: {message}")


def bootstrap_addresses(bootstrap: str) -> Iterator[tuple[str, int]]:
    """``host:port`` pairs of ``TRACING_KAFKA_BOOTSTRAP`` (``[v6]:port`` too; the port defaults to 9092)."""
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            host, port = item, "9092"
        yield host.strip("[]"), int(port)


def principal(settings: Settings) -> str:
    """Who the broker sees, in the words of the settings that choose it."""
    if settings.kafka_security_protocol.startswith("SASL"):
        return f"user {settings.kafka_sasl_username!r} ({PREFIX}KAFKA_SASL_USERNAME)"
    if settings.kafka_ssl_certfile:
        return f"the client certificate {settings.kafka_ssl_certfile!r} ({PREFIX}KAFKA_SSL_CERTFILE)"
    return "this client (anonymous: no SASL user, no client certificate)"


REACH_TIMEOUT_S = 5.0


async def check_reachable(settings: Settings) -> None:
    """Raise ``KafkaConnectionError`` unless a bootstrap server accepts a TCP connection: the callers retry
    while the broker is away, and aiokafka's clients would log an ERROR line per address and attempt."""
    addresses = list(bootstrap_addresses(settings.kafka_bootstrap))
    for host, port in addresses:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), REACH_TIMEOUT_S)
        except OSError:  # TimeoutError is one
            continue
        writer.close()
        return
    raise KafkaConnectionError(f"no broker reachable at {settings.kafka_bootstrap}")


async def check_access(settings: Settings) -> None:
    """Connect to the bootstrap servers as every client will (TLS handshake, SASL authentication, one
    request) until one answers. Raises :class:`KafkaAccessError` when a broker refuses this client and
    ``KafkaConnectionError`` when none is reachable (waiting for a broker is the caller's retry). Only
    reachability to check on a PLAINTEXT connection."""
    await check_reachable(settings)
    if settings.kafka_security_protocol == "PLAINTEXT":
        return
    options = settings.kafka_options()
    del options["bootstrap_servers"]
    for host, port in bootstrap_addresses(settings.kafka_bootstrap):
        try:
            conn = await create_conn(host, port, request_timeout_ms=30_000, **options)
        except (OSError, KafkaError) as exc:  # TimeoutError is an OSError
            refusal = _refusal(settings, f"{host}:{port}", exc)
            if refusal is not None:
                raise KafkaAccessError(refusal) from None
            continue
        conn.close()
        return


def _refusal(settings: Settings, address: str, exc: BaseException) -> str | None:
    """The one-line reason a failed connection attempt will fail again, or None if it may not."""
    if isinstance(exc, KafkaConnectionError) and exc.__cause__ is not None:
        exc = exc.__cause__  # a TLS alert from the broker arrives as the closed connection's cause
    mechanism = settings.kafka_sasl_mechanism
    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"authentication failed for user {settings.kafka_sasl_username!r} (SASL/{mechanism}) at {address}: "
            f"check {PREFIX}KAFKA_SASL_USERNAME/{PREFIX}KAFKA_SASL_PASSWORD (and {PREFIX}KAFKA_SASL_MECHANISM)"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"the broker at {address} does not offer SASL mechanism {mechanism}: check {PREFIX}KAFKA_SASL_MECHANISM"
    if isinstance(exc, ssl.SSLCertVerificationError):
        fix = f"check {PREFIX}KAFKA_SSL_CAFILE"
        if exc.verify_code == X509_V_ERR_HOSTNAME_MISMATCH:
            fix += f" and that {PREFIX}KAFKA_BOOTSTRAP names a host the broker's certificate is for"
        return f"the broker's certificate at {address} is not trusted ({exc.verify_message}): {fix}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror
        if settings.kafka_ssl_certfile:
            return (
                f"the broker at {address} rejected the client certificate ({reason}): check "
                f"{PREFIX}KAFKA_SSL_CERTFILE/{PREFIX}KAFKA_SSL_KEYFILE (a certificate the broker's CA signed)"
            )
        return (
            f"the broker at {address} requires a client certificate ({reason}): set "
            f"{PREFIX}KAFKA_SSL_CERTFILE/{PREFIX}KAFKA_SSL_KEYFILE"
        )
    return None


def raise_topic_errors(settings: Settings, topic_errors: Iterable[tuple[object, ...]]) -> None:
    """Check a CreateTopics response's ``(topic, error_code, ...)`` rows: an authorization failure is a
    :class:`KafkaAccessError`, another error a :class:`KafkaError` (retried); an existing topic is fine."""
    refused: list[str] = []
    for topic, code, *message in topic_errors:
        if code in TOPIC_AUTHORIZATION_ERRORS:
            refused.append(repr(topic))
        elif code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (another worker created it first)
            raise KafkaError(f"creating topic {topic!r} failed: error {code} {message[0] if message else ''}".rstrip())
    if refused:
        raise KafkaAccessError(
            f"{principal(settings)} may not create or describe topic{'s' if len(refused) > 1 else ''} "
            f"{', '.join(sorted(refused))} "
            "(TOPIC_AUTHORIZATION_FAILED): grant it CREATE and DESCRIBE on the topics (or create them and grant "
            "DESCRIBE, READ and WRITE)"
        )


async def wait_for_coordinator(settings: Settings, group: str, *, timeout_s: float = 60.0) -> None:
    """Return once the broker names the coordinator of consumer ``group``. A new broker has none until it
    created its offsets topic (a few seconds), and aiokafka's consumer logs an ERROR each time it asks
    meanwhile, which reads as a failure: so the wait is here, said once at INFO. A group this client may
    not use is a :class:`KafkaAccessError`; no coordinator within ``timeout_s``, the last retriable
    :class:`KafkaError`."""
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        said = False
        while True:
            try:
                await admin.find_coordinator(group)
                return
            except GroupAuthorizationFailedError:
                raise KafkaAccessError(
                    f"{principal(settings)} may not use consumer group {group!r} (GROUP_AUTHORIZATION_FAILED): "
                    f"grant it READ on the group, or check {PREFIX}GROUP"
                ) from None
            except KafkaError as exc:
                if not exc.retriable or loop.time() > deadline:
                    raise
                if not said:
                    log.info(
                        "waiting for the broker to name a coordinator for group %r (%s: a new broker creates "
                        "its offsets topic first)",
                        group,
                        exc.message,
                    )
                    said = True
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
