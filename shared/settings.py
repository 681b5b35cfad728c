"""One frozen settings object, read from ``TRACING_*`` environment variables and an optional TOML file.

Precedence: environment variable > TOML file (``TRACING_CONFIG=path``, keys are the setting names in
lower case without the prefix, e.g. ``kafka_bootstrap = "..."``) > default. A bad value fails fast with
:class:`SettingsError` naming the variable.
"""

from __future__ import annotations

import importlib.util
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

if TYPE_CHECKING:
    from shared.archive.location import ArchiveLocation

PREFIX = "TRACING_"

Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


EMPTY_MEANS_DEFAULT = frozenset({"sample_target_tps"})
"""Settings whose environment variable, set but empty, means the default (off)."""


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the ``TRACING_*`` variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of the workers and the API. Durations carry their unit in the name."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = "spans"
    otlp_topic: str = "otlp_spans"
    zipkin_topic: str = "zipkin"
    jaeger_topic: str = "jaeger-spans"  # one Jaeger model.Span per message (jaeger_proto or jaeger_json)
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
    # The archive (docs/archive.md): file:///folder or s3://bucket/prefix?endpoint=...&region=...; empty = none.
    archive_url: str = ""
    archive_after_h: Annotated[float, msgspec.Meta(gt=0)] = 24.0  # a finalized trace moves once its start is this old
    archive_retention_d: Annotated[float, msgspec.Meta(gt=0)] = 90.0  # whole blocks are deleted after this
    archive_check_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0  # how often the owners look for due traces
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
    # an e-mail address (written from its "@": a scan for a literal is fast); a card number: 13-16 digits
    # (single spaces or dashes between), not part of a longer token (a UUID such as service.instance.id
    # can hold 16 digits joined by a dash)
    redact_values: str = r"@(?<=[\w.+-]@)[\w-]+\.[\w.-]+|(?<![\w-])\d(?:[ -]?\d){12,15}(?![\w-])"
    # Tail sampling at finalization: keep failed, keep slow, keep this fraction of the rest.
    sample_rate: Fraction = 1.0
    sample_slow_ms: NonNegative = 1000
    # ... or, when set (> 0), up to this many of the rest per second per endpoint (replaces sample_rate)
    sample_target_tps: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    sample_target_refresh_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0  # how often a worker reads the rates
    # Remote sampling (the API's /api/sampling): traces/s kept per (service, root operation), recomputed
    # every interval; the gRPC SamplingManager listens on host:port when set (empty = off).
    remote_sampling_target_tps: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    remote_sampling_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    remote_sampling_grpc_bind: str = ""
    # HTTP API limits.
    max_body_bytes: Positive = 1024 * 1024
    # Kafka security: mapped onto aiokafka's own options, for every client alike (see kafka_options).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""  # PEM CA bundle the broker's certificate is checked against; empty = the system's
    kafka_ssl_certfile: str = ""  # PEM client certificate, for a broker that requires one (mutual TLS)
    kafka_ssl_keyfile: str = ""  # PEM private key of that certificate; empty = in the certificate file
    kafka_ssl_password: str = ""  # the private key's password, when it is encrypted
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
            if value is not None and not (name in EMPTY_MEANS_DEFAULT and not value.strip()):
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
        self.archive_location()
        for field in ("api_bind", "remote_sampling_grpc_bind"):
            bind = getattr(self, field)
            host, _, port = bind.rpartition(":")
            if (bind or field == "api_bind") and (not host or not port.isdigit() or not 0 <= int(port) <= 65535):
                raise SettingsError(f"{PREFIX}{field.upper()}: expected host:port, got {bind!r}")
        if not self.kafka_bootstrap.strip():
            raise SettingsError(f"{PREFIX}KAFKA_BOOTSTRAP: must name at least one host:port")
        self._validate_kafka_security()

    def _validate_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL"):
            for field in ("kafka_sasl_username", "kafka_sasl_password"):
                if not getattr(self, field):
                    raise SettingsError(
                        f"{PREFIX}{field.upper()}: required with {PREFIX}KAFKA_SECURITY_PROTOCOL={protocol}"
                    )
        if protocol.endswith("SSL"):
            self.kafka_ssl_context()  # every file read now, so that a bad one stops the process at once
            return
        for field in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "kafka_ssl_password"):
            if getattr(self, field):
                raise SettingsError(
                    f"{PREFIX}{field.upper()}: set, but {PREFIX}KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
                    "(SSL or SASL_SSL does)"
                )

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

    def archive_location(self) -> ArchiveLocation | None:
        """``TRACING_ARCHIVE_URL`` parsed (credentials from it or the ``AWS_*`` variables), ``None`` when
        empty. A malformed URL is a :class:`SettingsError` naming the setting (never its secret)."""
        if not self.archive_url.strip():
            return None
        from shared.archive.location import ArchiveLocation, ArchiveUrlError

        try:
            location = ArchiveLocation.parse(self.archive_url.strip())
        except ArchiveUrlError as exc:
            raise SettingsError(f"{PREFIX}ARCHIVE_URL: {exc}") from None
        for module in ("pyarrow", "obstore") if location.scheme == "s3" else ("pyarrow",):
            if importlib.util.find_spec(module) is None:
                raise SettingsError(
                    f"{PREFIX}ARCHIVE_URL: the archive needs {module}: pip install 'kafka-tracing[archive]'"
                )
        return location

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
            options["ssl_context"] = self.kafka_ssl_context()
        return options

    def kafka_ssl_context(self) -> ssl.SSLContext:
        """The TLS context of the Kafka clients: the broker checked against ``TRACING_KAFKA_SSL_CAFILE`` (or
        the system's CAs) and its host name, and the client certificate presented when one is set. A file
        that is missing or unreadable, or a key its password does not open, is a :class:`SettingsError`
        naming the setting (never the password)."""
        return kafka_ssl_context(
            self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile, self.kafka_ssl_password
        )

    def __repr__(self) -> str:
        """The fields, with every password masked and the archive URL without its credentials (settings
        may be logged)."""
        fields = ", ".join(f"{name}={self._shown(name)}" for name in self.__struct_fields__)
        return f"Settings({fields})"

    def _shown(self, name: str) -> str:
        value = getattr(self, name)
        if name.endswith("_password") and value:
            return "***"
        if name == "archive_url" and "@" in value:
            return repr(_without_userinfo(value))
        return repr(value)


def kafka_ssl_context(cafile: str, certfile: str, keyfile: str, password: str) -> ssl.SSLContext:
    """See :meth:`Settings.kafka_ssl_context`."""
    for field, path in (("CAFILE", cafile), ("CERTFILE", certfile), ("KEYFILE", keyfile)):
        if path and not os.path.isfile(path):
            raise SettingsError(f"{PREFIX}KAFKA_SSL_{field}: no such file {path!r}")
    if keyfile and not certfile:
        raise SettingsError(
            f"{PREFIX}KAFKA_SSL_KEYFILE: set without {PREFIX}KAFKA_SSL_CERTFILE (the certificate it goes with)"
        )
    try:
        context = ssl.create_default_context(cafile=cafile or None)
    except ssl.SSLError as exc:
        raise SettingsError(f"{PREFIX}KAFKA_SSL_CAFILE: no PEM certificate in {cafile!r} ({exc.reason})") from None
    if certfile:
        try:
            # the password is always passed (empty when unset): OpenSSL would otherwise prompt on a terminal
            context.load_cert_chain(certfile, keyfile or None, password=password)
        except ssl.SSLError as exc:
            raise SettingsError(_client_certificate_error(certfile, keyfile, password, exc)) from None
    return context


def _client_certificate_error(certfile: str, keyfile: str, password: str, exc: ssl.SSLError) -> str:
    """Why the client certificate and key do not load, naming the setting to fix (never the password)."""
    key_path = keyfile or certfile
    with open(key_path, "rb") as f:
        encrypted = b"ENCRYPTED" in f.read()
    key_setting = f"{PREFIX}KAFKA_SSL_KEYFILE" if keyfile else f"{PREFIX}KAFKA_SSL_CERTFILE"
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"{key_setting}: the private key in {key_path!r} does not belong to the certificate in {certfile!r}"
    if encrypted and not password:
        return f"{key_setting}: the private key in {key_path!r} is encrypted: set {PREFIX}KAFKA_SSL_PASSWORD"
    if encrypted:  # OpenSSL gives no reason for a wrong password, only "PEM lib"
        return f"{PREFIX}KAFKA_SSL_PASSWORD: does not decrypt the private key in {key_path!r}"
    return (
        f"{PREFIX}KAFKA_SSL_CERTFILE/{PREFIX}KAFKA_SSL_KEYFILE: cannot load the client certificate {certfile!r} "
        f"and its key ({exc.reason or exc.strerror})"
    )


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}***@{host.rpartition('@')[2]}{slash}{path}"


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _name_setting(message: str) -> str:
    """Turn msgspec's ``... - at `$.grace_ms``` into a message naming ``TRACING_GRACE_MS``."""
    match = re.search(r"at `\$\.(\w+)`", message)
    if match:
        return f"{PREFIX}{match.group(1).upper()}: {message.split(' - at ')[0]}"
    return message
