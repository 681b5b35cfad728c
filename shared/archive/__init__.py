"""The archive: finalized traces in Parquet blocks on object storage (docs/archive.md).

* :mod:`.location`: ``TRACING_ARCHIVE_URL`` parsed (:class:`ArchiveLocation`).
* :mod:`.objects`: the object store (:class:`ObjectStore`; ``file://`` here, ``s3://`` in :mod:`.s3`),
  opened by :func:`open_object_store`.
* :mod:`.block`: the block format: :func:`write_block` (traces -> :class:`Block`: its bytes and the
  :class:`BlockMeta` the hot store registers, as :func:`encode_meta` packs it), :func:`block_name`.
* :mod:`.reader`: :class:`BlockReader`: a trace by id and searches, fetching only the row groups that can
  match.
"""

from __future__ import annotations

from shared.archive.block import (
    BLOCKS,
    Block,
    BlockMeta,
    RowGroupMeta,
    block_name,
    decode_meta,
    encode_meta,
    write_block,
)
from shared.archive.location import ArchiveLocation, ArchiveUrlError
from shared.archive.objects import ObjectInfo, ObjectMissing, ObjectStore, open_object_store
from shared.archive.reader import BlockReader

__all__ = [
    "BLOCKS",
    "ArchiveLocation",
    "ArchiveUrlError",
    "Block",
    "BlockMeta",
    "BlockReader",
    "ObjectInfo",
    "ObjectMissing",
    "ObjectStore",
    "RowGroupMeta",
    "block_name",
    "decode_meta",
    "encode_meta",
    "open_object_store",
    "write_block",
]
