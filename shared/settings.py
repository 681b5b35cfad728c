"""One frozen settings object, read from ``TRACING_*`` environment variables and an optional TOML file.

Precedence: environment variable > TOML file (``TRACING_CONFIG=path``, keys are the setting names in
lower case without the prefix, e.g. ``kafka_bootstrap = "..."``) > default. A bad value fails fast with
:class:`SettingsError` naming the variable.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

PREFIX = "TRACING_"

Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the ``TRACING_*`` variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of the workers and the API. Durations carry their unit in the name."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = "spans"
    otlp_topic: str = "otlp_spans"
    zipkin_topic: str = "zipkin"
    otlp_format: Literal["otlp_proto", "otlp_json"] = "otlp_proto"
    dlq_suffix: str = ".dlq"
    group: str = "tracing-ingest"
    partitions: Positive = 12
    replication_factor: Positive = 1
    store_url: str = "sqlite:///data/traces.db"
    api_bind: str = "127.0.0.1:3000"
    grace_ms: NonNegative = 500
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    read_tokens: tuple[str, ...] = ()
    write_tokens: tuple[str, ...] = ()
    retention_h: Annotated[float, msgspec.Meta(gt=0)] = 168.0
    retention_check_s: Annotated[float, msgspec.Meta(gt=0)] = 600.0  # how often workers purge
    # Worker tuning.
    batch_max: Positive = 5000
    fetch_max_bytes: Positive = 16 * 1024 * 1024
    finalize_batch: Positive = 500
    finalize_process: bool = True  # finalize in a process of the worker's own (ingest/finalizer/); false = inline
    cache_mb: NonNegative = 64  # the worker's copy of the traces it wrote (finalized without a read-back); 0 = off
    heartbeat_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    worker_metrics_bind: str = ""  # host:port for the worker's Prometheus /metrics; empty = off
    # Redaction of tag values at ingest (on by default).
    redact: bool = True
    # whole words of a key (db.password, access_token, x-api-key) or a camelCase ending (userPassword),
    # never a prefix of another word (passenger_count, max_tokens)
    redact_keys: str = (
        r"(?i)(?:^|[^a-z0-9])(?:pass(?:word|wd)?|secret|token|authorization|api[-_.]?key|cookie|credentials?)"
        r"(?:[^a-z0-9]|$)|(?:password|secret|token)$"
    )
    # an e-mail address; a card number: 13-16 digits (single spaces or dashes between), not part of a longer
    # token (a UUID such as service.instance.id can hold 16 digits joined by a dash)
    redact_values: str = r"[\w.+-]+@[\w-]+\.[\w.-]+|(?<![\w-])\d(?:[ -]?\d){12,15}(?![\w-])"
    # Tail sampling at finalization: keep failed, keep slow, keep this fraction of the rest.
    sample_rate: Fraction = 1.0
    sample_slow_ms: NonNegative = 1000
    # HTTP API limits.
    max_body_bytes: Positive = 1024 * 1024
    # Kafka security: mapped onto aiokafka's own options.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), the TOML file it names, and overrides."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        config_path = env.get(PREFIX + "CONFIG")
        if config_path:
            try:
                with open(config_path, "rb") as f:
                    file_values = tomllib.load(f)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise SettingsError(f"{PREFIX}CONFIG: cannot read {config_path!r}: {exc}") from exc
            for key, value in file_values.items():
                if key not in cls.__struct_fields__:
                    raise SettingsError(f"{PREFIX}CONFIG: unknown setting {key!r} in {config_path}")
                raw[key] = value
        for name in cls.__struct_fields__:
            value = env.get(PREFIX + name.upper())
            if value is not None:
                raw[name] = _split(value) if name.endswith("_tokens") else value
        raw.update(overrides)
        for name, value in raw.items():
            if name.endswith("_tokens") and isinstance(value, str):
                raw[name] = _split(value)
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(_name_setting(str(exc))) from exc
        settings.validate()
        return settings

    def validate(self) -> None:
        """Cross-field checks that msgspec constraints cannot express."""
        for field in ("redact_keys", "redact_values"):
            try:
                re.compile(getattr(self, field))
            except re.error as exc:
                raise SettingsError(f"{PREFIX}{field.upper()}: not a valid regular expression: {exc}") from exc
        if self.store_url.startswith("cassandra:"):
            from shared.store.cassandra.config import CassandraConfig, CassandraUrlError

            try:
                CassandraConfig.from_url(self.store_url)
            except CassandraUrlError as exc:
                raise SettingsError(f"{PREFIX}STORE_URL: {exc}") from exc
        elif not self.store_url.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise SettingsError(
                f"{PREFIX}STORE_URL: expected sqlite:///path.db, postgresql://... or cassandra://..., "
                f"got {self.store_url!r}"
            )
        host, _, port = self.api_bind.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise SettingsError(f"{PREFIX}API_BIND: expected host:port, got {self.api_bind!r}")
        if not self.kafka_bootstrap.strip():
            raise SettingsError(f"{PREFIX}KAFKA_BOOTSTRAP: must name at least one host:port")

    @property
    def dlq_topic(self) -> str:
        return self.topic + self.dlq_suffix

    @property
    def grace_us(self) -> int:
        return self.grace_ms * 1000

    @property
    def idle_timeout_us(self) -> int:
        return int(self.idle_timeout_s * 1_000_000)

    @property
    def api_host_port(self) -> tuple[str, int]:
        host, _, port = self.api_bind.rpartition(":")
        return host.strip("[]"), int(port)

    def kafka_options(self) -> dict[str, Any]:
        """Connection options for every aiokafka client (bootstrap and security)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_security_protocol.endswith("SSL"):
            import ssl

            context = ssl.create_default_context(cafile=self.kafka_ssl_cafile or None)
            options["ssl_context"] = context
        return options


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _name_setting(message: str) -> str:
    """Turn msgspec's ``... - at `$.grace_ms``` into a message naming ``TRACING_GRACE_MS``."""
    match = re.search(r"at `\$\.(\w+)`", message)
    if match:
        return f"{PREFIX}{match.group(1).upper()}: {message.split(' - at ')[0]}"
    return message
