"""The archive: finalized traces in Parquet blocks on object storage (docs/archive.md, ADR 0016).

* :mod:`.location`: ``TRACING_ARCHIVE_URL`` parsed (:class:`~.location.ArchiveLocation`); imports nothing
  beyond the standard library and msgspec, so settings are checked without the ``archive`` extra.
* :mod:`.objects`: the object store (:class:`~.objects.ObjectStore`; ``file://`` there, ``s3://`` in
  :mod:`.s3`), opened by :func:`~.objects.open_object_store`.
* :mod:`.block`: the block format: :func:`~.block.write_block` (traces -> :class:`~.block.Block`: its bytes
  and the :class:`~.block.BlockMeta` the hot store registers, packed by :func:`~.block.encode_meta`),
  :func:`~.block.block_name`.
* :mod:`.reader`: :class:`~.reader.BlockReader`: a trace by id and searches, fetching only the row groups
  that can match.
"""
