"""Chunks compressed with a store's trained zstd dictionary (``shared/store/encoding.py``,
:class:`~shared.store.encoding.Dictionaries`): every chunk reads back equal with or without one, a reader
needs the dictionary a chunk names, and a writer trains one only from enough of its own chunks."""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.demo import make_trace
from shared.models import Event
from shared.store import encoding
from shared.store.encoding import (
    CHUNK_DICT,
    CHUNK_V1,
    Dictionaries,
    decode_chunk,
    dict_id,
    encode_chunk,
    payload_size,
    train,
    varint,
)
from tests.unit.test_encoding import events, ids

DICT_ID = 300  # two bytes as a varint


@functools.cache
def trained() -> bytes:
    """A dictionary trained as a writer trains one: from the demo traces it wrote, once it had enough."""
    writer = Dictionaries()
    rng = random.Random(5)
    samples = None
    while samples is None:
        encode_chunk(make_trace(rng, 1_700_000_000_000_000), writer)
        samples = writer.samples()
    body = train(samples)
    assert body is not None and len(body) <= encoding.DICT_BYTES
    return body


def writer_with_dictionary() -> Dictionaries:
    writer = Dictionaries()
    writer.use(DICT_ID, trained())
    return writer


@settings(deadline=None)  # the first example trains the dictionary
@given(ids.flatmap(lambda t: st.lists(events(t), max_size=5)))
def test_a_chunk_reads_back_equal_with_a_dictionary_and_without(chunk: list[Event]) -> None:
    reader = Dictionaries()
    reader.load(DICT_ID, trained())  # another process's copy: loaded from the store, never used to write
    with_dict = encode_chunk(chunk, writer_with_dictionary())
    plain = encode_chunk(chunk, Dictionaries())
    assert with_dict[0] == CHUNK_DICT and dict_id(with_dict) == (DICT_ID, 3)
    assert plain[0] == CHUNK_V1 and plain == encode_chunk(chunk)
    assert decode_chunk(with_dict, reader) == chunk
    assert decode_chunk(plain, reader) == decode_chunk(plain) == chunk
    assert payload_size(with_dict) == payload_size(plain)  # the cache measures a state the same either way


def test_a_dictionary_halves_a_small_chunk() -> None:
    rng = random.Random(11)
    chunks = [make_trace(rng, 1_700_000_000_000_000)[:3] for _ in range(200)]
    writer = writer_with_dictionary()
    with_dict = sum(len(encode_chunk(c, writer)) for c in chunks)
    plain = sum(len(encode_chunk(c)) for c in chunks)
    assert with_dict < plain / 2


def test_a_chunk_needs_the_dictionary_it_names() -> None:
    chunk = make_trace(random.Random(1), 1_700_000_000_000_000)
    body = encode_chunk(chunk, writer_with_dictionary())
    with pytest.raises(ValueError, match="dictionary 300, and no dictionaries given"):
        decode_chunk(body)
    with pytest.raises(ValueError, match="dictionary 300, which is not loaded"):
        decode_chunk(body, Dictionaries())
    reader = Dictionaries()
    assert reader.missing([body, encode_chunk(chunk)]) == {DICT_ID}
    reader.load(DICT_ID, trained())
    assert reader.missing([body]) == set()
    assert decode_chunk(body, reader) == chunk


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**35, 2**63 - 1])
def test_a_dictionary_id_reads_back(value: int) -> None:
    header = bytes((CHUNK_DICT,)) + varint(value)
    assert dict_id(header + b"frame") == (value, len(header))
    with pytest.raises(ValueError, match="cut short"):
        dict_id(header[:-1])


def test_a_writer_samples_enough_of_its_chunks_then_stops_once_it_has_a_dictionary() -> None:
    writer = Dictionaries()
    small = b"x" * 1000
    for _ in range(encoding.SAMPLE_CHUNKS - 1):
        writer.compress(small * 20)
    assert writer.samples() is None  # enough bytes, too few chunks
    writer.compress(b"y" * (encoding.SAMPLE_MAX_CHUNK + 1))  # too large to sample
    assert writer.samples() is None
    writer.compress(small)
    samples = writer.samples()
    assert samples is not None and len(samples) == encoding.SAMPLE_CHUNKS
    assert writer.samples() is None  # collecting started over
    writer.use(1, trained())
    for _ in range(encoding.SAMPLE_CHUNKS * 2):
        assert writer.compress(small * 20)[0] == CHUNK_DICT
    assert writer.samples() is None and writer.current == 1


def test_chunks_zstd_cannot_train_from_leave_the_writer_plain() -> None:
    assert train([b"ab"] * 3) is None
    writer = Dictionaries()
    writer.stop_sampling()
    for _ in range(encoding.SAMPLE_CHUNKS):
        writer.compress(b"x" * encoding.SAMPLE_MAX_CHUNK)
    assert writer.samples() is None and writer.current is None
