"""The parts of :mod:`shared.kafka_access` that need no broker (the refusals are tried on a real one in
``tests/e2e/test_kafka_security.py``)."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaError

from shared.kafka_access import KafkaAccessError, bootstrap_addresses, raise_topic_errors
from shared.settings import Settings


def test_bootstrap_addresses() -> None:
    assert list(bootstrap_addresses("k1:9092, k2:9093,,[::1]:9094,plain")) == [
        ("k1", 9092),
        ("k2", 9093),
        ("::1", 9094),
        ("plain", 9092),
    ]


def test_topic_errors_tell_a_missing_acl_from_a_retriable_failure() -> None:
    settings = Settings.from_env(
        {"TRACING_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TRACING_KAFKA_SASL_USERNAME": "svc",
         "TRACING_KAFKA_SASL_PASSWORD": "hunter2"}
    )  # fmt: skip
    raise_topic_errors(settings, [("spans", 0, None), ("spans.dlq", 36, "exists")])
    with pytest.raises(KafkaAccessError) as refused:
        raise_topic_errors(settings, [("spans", 29, "Authorization failed."), ("b", 0, None), ("a", 29, "")])
    assert str(refused.value) == (
        "kafka: user 'svc' (TRACING_KAFKA_SASL_USERNAME) may not create or describe topics 'a', 'spans' "
        "(TOPIC_AUTHORIZATION_FAILED): grant it CREATE and DESCRIBE on the topics (or create them and grant "
        "DESCRIBE, READ and WRITE)"
    )
    assert "hunter2" not in str(refused.value)
    with pytest.raises(KafkaError, match="error 37"):
        raise_topic_errors(settings, [("spans", 37, "Number of partitions is invalid.")])
