"""A trace's owner shard: the partition its trace id is keyed to, whichever partition its spans came on."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from ingest.ownership import owner_shard

IDS = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


@given(IDS, st.integers(1, 64))
def test_owner_is_where_a_keyed_producer_puts_the_trace(trace_id: str, partitions: int) -> None:
    """Kafka's default partitioner (murmur2 of the key, as the Java client and aiokafka place keyed
    messages) puts a message keyed by the trace id on the owner's partition: for keyed producers the
    owner is the partition the spans arrive on, so the worker that wrote them finalizes them."""
    placed = DefaultPartitioner()(trace_id.encode(), list(range(partitions)), list(range(partitions)))
    assert owner_shard("otlp_spans", partitions, trace_id) == f"otlp_spans/{placed}"


def test_every_worker_names_the_same_owner() -> None:
    owners = {owner_shard("zipkin", 12, "4bf92f3577b34da6a3ce929d0e0e4736") for _ in range(3)}
    assert len(owners) == 1
    assert {owner_shard("zipkin", 12, f"{i:032x}") for i in range(500)} == {f"zipkin/{p}" for p in range(12)}
