"""Atomic Parquet files that carry their schema version and lineage.

Every table the pipeline writes goes through :func:`write_table`: the file is
written next to its destination and renamed into place, so a crash or kill
leaves either the previous file or the new one, never half of either.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from wsss_core.store.atomic import write_parquet_atomic

METADATA_KEY = b"wsss"


def write_table(
    path: Path,
    table: pa.Table,
    metadata: dict[str, Any],
    row_group_size: int | None = None,
) -> None:
    """Write ``table`` to ``path`` atomically with ``metadata`` stored under the ``wsss`` key.

    zstd-compressed. ``row_group_size`` bounds the rows a reader decodes at a
    time (map tables use small groups so streaming readers stay small).
    Binary columns (array cells) are stored without dictionary encoding: their
    values never repeat.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = table.schema.metadata or {}
    schema = table.schema.with_metadata(
        {**existing, METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
    )
    table = table.replace_schema_metadata(schema.metadata)
    dictionary = [field.name for field in table.schema if not pa.types.is_binary(field.type)]
    write_parquet_atomic(
        path,
        table,
        compression="zstd",
        row_group_size=row_group_size,
        use_dictionary=dictionary,
    )


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``wsss`` metadata of a Parquet file written by :func:`write_table`."""
    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path}: not a wsss table (no '{METADATA_KEY.decode()}' metadata)")
    return json.loads(raw)


def iter_batches(
    path: Path, batch_size: int, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``batch_size`` rows, read one row group at a time."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the stage that writes it first")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{path}: unreadable Parquet file ({error})") from error
    with parquet:
        yield from parquet.iter_batches(batch_size=batch_size, columns=columns)


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a table, naming the file in the error when it is missing or unreadable."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the stage that writes it first")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{path}: unreadable Parquet file ({error})") from error
