"""How tag values are indexed for search: one string form per value, the same in every backend."""

from __future__ import annotations

import functools
import hashlib
from typing import Final

from shared.models import TagValue


def tag_text(value: TagValue) -> str:
    """``true``/``false`` for booleans (as Jaeger and Zipkin print them), ``str`` otherwise."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if type(value) is str else str(value)


TAG_HASH_CACHED: Final = 1 << 16
"""(key, value) hashes kept: a batch repeats the same few hundred pairs (resource attributes, methods,
status codes) across its traces."""


@functools.lru_cache(maxsize=TAG_HASH_CACHED)
def tag_hash(key: str, value: str) -> int:
    """The tag index's key for a (key, value text) pair: the first 8 bytes of its BLAKE2b digest as a signed
    64-bit integer (SQLite's ``INTEGER``, PostgreSQL's ``bigint``), over the UTF-8 key's length, the key
    and the value, so no two pairs are one input. Two distinct pairs share a hash with probability 2^-64:
    among a billion distinct pairs stored, a search for one of them also matches an unrelated trace with
    probability about 5e-11 (docs/adr/0014)."""
    k = key.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(
        len(k).to_bytes(4, "little") + k + value.encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little", signed=True)
