"""Settings: defaults, environment, TOML file, fail-fast errors naming the variable, Kafka security."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from shared.settings import Settings, SettingsError
from tests.e2e.secure_kafka import make_pki


def test_defaults_are_the_documented_ones() -> None:
    s = Settings.from_env({})
    assert (s.kafka_bootstrap, s.topic, s.group, s.partitions) == ("127.0.0.1:9092", "spans", "tracing-ingest", 12)
    assert (s.store_url, s.api_bind, s.grace_ms, s.idle_timeout_s) == (
        "sqlite:///data/traces.db",
        "127.0.0.1:3000",
        500,
        60,
    )
    assert (s.read_tokens, s.write_tokens, s.retention_h) == ((), (), 168)
    assert (s.otlp_topic, s.zipkin_topic, s.jaeger_topic, s.dlq_topic) == (
        "otlp_spans",
        "zipkin",
        "jaeger-spans",
        "spans.dlq",
    )
    assert (s.remote_sampling_target_tps, s.remote_sampling_interval_s, s.remote_sampling_grpc_bind) == (1, 60, "")


def test_environment_overrides_file_and_file_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "tracing.toml"
    config.write_text('topic = "from-file"\ngrace_ms = 900\nread_tokens = "a,b"\n')
    s = Settings.from_env({"TRACING_CONFIG": str(config), "TRACING_GRACE_MS": "100", "TRACING_WRITE_TOKENS": "w1, w2"})
    assert (s.topic, s.grace_ms) == ("from-file", 100)
    assert (s.read_tokens, s.write_tokens) == (("a", "b"), ("w1", "w2"))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TRACING_GRACE_MS": "-1"}, "TRACING_GRACE_MS"),
        ({"TRACING_PARTITIONS": "many"}, "TRACING_PARTITIONS"),
        ({"TRACING_PARTITIONS": "0"}, "TRACING_PARTITIONS"),
        ({"TRACING_STORE_URL": "mysql://x"}, "TRACING_STORE_URL"),
        ({"TRACING_API_BIND": "nowhere"}, "TRACING_API_BIND"),
        ({"TRACING_IDLE_TIMEOUT_S": "0"}, "TRACING_IDLE_TIMEOUT_S"),
        ({"TRACING_REMOTE_SAMPLING_GRPC_BIND": "14250"}, "TRACING_REMOTE_SAMPLING_GRPC_BIND"),
        ({"TRACING_REMOTE_SAMPLING_TARGET_TPS": "0"}, "TRACING_REMOTE_SAMPLING_TARGET_TPS"),
        ({"TRACING_REMOTE_SAMPLING_INTERVAL_S": "-1"}, "TRACING_REMOTE_SAMPLING_INTERVAL_S"),
        ({"TRACING_SAMPLE_RATE": "2"}, "TRACING_SAMPLE_RATE"),
        ({"TRACING_REDACT_KEYS": "(unclosed"}, "TRACING_REDACT_KEYS"),
        ({"TRACING_KAFKA_SECURITY_PROTOCOL": "TLS"}, "TRACING_KAFKA_SECURITY_PROTOCOL"),
        ({"TRACING_KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"}, "TRACING_KAFKA_SASL_MECHANISM"),
        ({"TRACING_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "TRACING_KAFKA_SASL_USERNAME"),
        ({"TRACING_KAFKA_SSL_CERTFILE": "client.pem"}, "TRACING_KAFKA_SSL_CERTFILE: set, but .*PLAINTEXT"),
        (
            {"TRACING_KAFKA_SECURITY_PROTOCOL": "SSL", "TRACING_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "TRACING_KAFKA_SSL_CAFILE: no such file",
        ),
        (
            {"TRACING_KAFKA_SECURITY_PROTOCOL": "SSL", "TRACING_KAFKA_SSL_KEYFILE": __file__},
            "TRACING_KAFKA_SSL_KEYFILE: set without TRACING_KAFKA_SSL_CERTFILE",
        ),
        ({"TRACING_CONFIG": "/nonexistent/tracing.toml"}, "TRACING_CONFIG"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "tracing.toml"
    config.write_text("grace = 5\n")
    with pytest.raises(SettingsError, match="unknown setting 'grace'"):
        Settings.from_env({"TRACING_CONFIG": str(config)})


def test_kafka_security_maps_onto_aiokafka_options() -> None:
    plain = Settings.from_env({"TRACING_KAFKA_BOOTSTRAP": "k1:9092,k2:9092"}).kafka_options()
    assert plain == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}
    sasl = Settings.from_env(
        {"TRACING_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TRACING_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
         "TRACING_KAFKA_SASL_USERNAME": "u", "TRACING_KAFKA_SASL_PASSWORD": "p"}
    ).kafka_options()  # fmt: skip
    assert sasl["security_protocol"] == "SASL_SSL"
    assert (sasl["sasl_mechanism"], sasl["sasl_plain_username"], sasl["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "u",
        "p",
    )
    assert isinstance(sasl["ssl_context"], ssl.SSLContext)


def test_a_client_certificate_that_does_not_load_names_the_setting_never_the_password(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cert, key = str(pki.cert("tracer-tls")), str(pki.key("tracer-tls"))
    env = {"TRACING_KAFKA_SECURITY_PROTOCOL": "SSL", "TRACING_KAFKA_SSL_CAFILE": str(pki.ca),
           "TRACING_KAFKA_SSL_CERTFILE": cert, "TRACING_KAFKA_SSL_KEYFILE": key}  # fmt: skip
    cases = [
        ({"TRACING_KAFKA_SSL_PASSWORD": "wrong-" + pki.key_password}, "TRACING_KAFKA_SSL_PASSWORD: does not decrypt"),
        ({}, "TRACING_KAFKA_SSL_KEYFILE: the private key in .* is encrypted: set TRACING_KAFKA_SSL_PASSWORD"),
        ({"TRACING_KAFKA_SSL_KEYFILE": str(pki.key("broker"))}, "TRACING_KAFKA_SSL_KEYFILE: .* does not belong"),
    ]
    for change, message in cases:
        with pytest.raises(SettingsError, match=message) as raised:
            Settings.from_env({**env, **change})
        assert pki.key_password not in str(raised.value)
    settings = Settings.from_env({**env, "TRACING_KAFKA_SSL_PASSWORD": pki.key_password})
    assert isinstance(settings.kafka_options()["ssl_context"], ssl.SSLContext)
    assert pki.key_password not in repr(settings) and "kafka_ssl_password=***" in repr(settings)


def test_archive_ages_take_fractions_down_to_minutes_as_the_retention_does() -> None:
    s = Settings.from_env(
        {"TRACING_RETENTION_H": "0.0833", "TRACING_ARCHIVE_AFTER_H": "0.0333", "TRACING_ARCHIVE_RETENTION_D": "0.00417"}
    )
    assert round(s.retention_h * 60) == 5
    assert round(s.archive_after_h * 60) == 2  # minutes
    assert round(s.archive_retention_d * 24 * 60) == 6


def test_archive_settings_default_to_no_archive_and_parse_both_kinds_of_url(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings.from_env({})
    assert (s.archive_url, s.archive_after_h, s.archive_retention_d, s.archive_check_s) == ("", 24, 90, 60)
    assert s.archive_location() is None
    s = Settings.from_env({"TRACING_ARCHIVE_URL": "file:///var/lib/tracing/archive/", "TRACING_ARCHIVE_AFTER_H": "1.5"})
    location = s.archive_location()
    assert location is not None and (location.scheme, location.bucket, s.archive_after_h) == (
        "file",
        "/var/lib/tracing/archive",
        1.5,
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    url = "s3://traces/prod/eu?endpoint=http://127.0.0.1:9000&region=eu-west-1"
    location = Settings.from_env({"TRACING_ARCHIVE_URL": url}).archive_location()
    assert location is not None
    assert (location.bucket, location.prefix, location.endpoint, location.region) == (
        "traces",
        "prod/eu/",
        "http://127.0.0.1:9000",
        "eu-west-1",
    )
    assert (location.access_key_id, location.secret_access_key) == ("from-env", "env-secret")
    s = Settings.from_env({"TRACING_ARCHIVE_URL": "s3://KEY:se%2Fcr%2Bet@traces/p?endpoint=http://h:9000"})
    location = s.archive_location()
    assert location is not None and (location.access_key_id, location.secret_access_key) == ("KEY", "se/cr+et")
    assert "se%2Fcr" not in repr(s) and "se/cr" not in repr(s) and "se/cr" not in repr(location)
    assert "s3://***@traces/p?endpoint=http://h:9000" in repr(s)


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"TRACING_ARCHIVE_URL": "ftp://host/folder"}, "TRACING_ARCHIVE_URL: expected file:///path or s3://"),
        ({"TRACING_ARCHIVE_URL": "file://relative/folder"}, "TRACING_ARCHIVE_URL: expected file:///absolute/path"),
        ({"TRACING_ARCHIVE_URL": "/var/archive"}, "TRACING_ARCHIVE_URL: expected file:///path"),
        ({"TRACING_ARCHIVE_URL": "s3://b/p?endpoint=ftp://h"}, "TRACING_ARCHIVE_URL: endpoint: expected http"),
        ({"TRACING_ARCHIVE_URL": "s3://b/p?bucket=x"}, "TRACING_ARCHIVE_URL: unknown query parameter 'bucket'"),
        ({"TRACING_ARCHIVE_URL": "s3://b:9000/p"}, "TRACING_ARCHIVE_URL: expected s3://bucket/prefix"),
        ({"TRACING_ARCHIVE_URL": "s3://KEY:@b/p"}, "TRACING_ARCHIVE_URL: credentials in the URL need both"),
        ({"TRACING_ARCHIVE_AFTER_H": "0"}, "TRACING_ARCHIVE_AFTER_H: Expected `float` > 0.0"),
        ({"TRACING_ARCHIVE_RETENTION_D": "-1"}, "TRACING_ARCHIVE_RETENTION_D: Expected `float` > 0.0"),
        ({"TRACING_ARCHIVE_CHECK_S": "often"}, "TRACING_ARCHIVE_CHECK_S: Expected `float`"),
    ],
)
def test_bad_archive_settings_fail_naming_the_setting(env: dict[str, str], error: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(error)):
        Settings.from_env(env)


def test_a_bad_archive_url_never_shows_its_secret() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"TRACING_ARCHIVE_URL": "s3://KEY:hunter2@b/p?endpoint=gopher://h"})
    assert "hunter2" not in str(caught.value)


def test_half_the_aws_credentials_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "only-the-key")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(SettingsError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: set both or neither"):
        Settings.from_env({"TRACING_ARCHIVE_URL": "s3://b/p"})


def test_an_s3_archive_without_its_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "obstore" else real(name))
    with pytest.raises(SettingsError, match=re.escape("pip install 'kafka-tracing[archive]'")):
        Settings.from_env({"TRACING_ARCHIVE_URL": "s3://b/p"})
    assert Settings.from_env({"TRACING_ARCHIVE_URL": "file:///var/archive"}).archive_location() is not None
