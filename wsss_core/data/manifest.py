"""The manifest: one row per usable image, the single input of every later stage.

Schema (``manifest.parquet``):

======== ================ ==================================================
column   type             meaning
======== ================ ==================================================
image_id string           unique id, used to name every derived artefact
uri      string           absolute path of the image file
width    int32            pixels, after EXIF orientation
height   int32            pixels, after EXIF orientation
labels   list<int16>      class ids present (image-level labels)
split    string           ``train`` / ``val`` / any name the source gives
sha256   string           content hash of the image file
gt_uri   string (null)    ground-truth label map, when the source has one
======== ================ ==================================================

File metadata: ``schema_version``, ``class_names`` (ordered), ``source``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from wsss_core.store.parquet_io import read_metadata, read_table, write_table
from wsss_core.store.workspace import Workspace

MANIFEST_SCHEMA_VERSION = 1

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("labels", pa.list_(pa.int16())),
        ("split", pa.string()),
        ("sha256", pa.string()),
        ("gt_uri", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("uri", pa.string()), ("reason", pa.string())]
)


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    uri: str
    width: int
    height: int
    labels: tuple[int, ...]
    split: str
    sha256: str
    gt_uri: str | None = None


@dataclass(frozen=True)
class QuarantinedItem:
    image_id: str
    uri: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    class_names: tuple[str, ...]
    records: tuple[ImageRecord, ...]
    source: dict[str, str] = field(default_factory=dict)
    content_hash: str = ""

    def __len__(self) -> int:
        return len(self.records)

    def split(self, name: str) -> list[ImageRecord]:
        return [record for record in self.records if record.split == name]

    def shards(self, shard_size: int) -> list[tuple[ImageRecord, ...]]:
        """Fixed-size chunks in manifest order; shard ``i`` maps to ``part-i`` files."""
        return [
            self.records[start : start + shard_size]
            for start in range(0, len(self.records), shard_size)
        ]

    def by_id(self) -> dict[str, ImageRecord]:
        return {record.image_id: record for record in self.records}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_hash(records: Sequence[ImageRecord], class_names: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(class_names).encode())
    for record in records:
        digest.update(f"{record.image_id}|{record.sha256}|{record.labels}|{record.split}".encode())
    return digest.hexdigest()[:16]


def write_manifest(
    workspace: Workspace,
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    source: dict[str, str],
) -> Manifest:
    ids = [record.image_id for record in records]
    if len(set(ids)) != len(ids):
        raise ValueError("manifest image ids must be unique")
    columns = {
        "image_id": ids,
        "uri": [record.uri for record in records],
        "width": [record.width for record in records],
        "height": [record.height for record in records],
        "labels": [list(record.labels) for record in records],
        "split": [record.split for record in records],
        "sha256": [record.sha256 for record in records],
        "gt_uri": [record.gt_uri for record in records],
    }
    table = pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
    content_hash = _manifest_hash(records, class_names)
    metadata = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "class_names": list(class_names),
        "source": source,
        "content_hash": content_hash,
    }
    write_table(workspace.manifest_path, table, metadata)
    return Manifest(tuple(class_names), tuple(records), dict(source), content_hash)


def read_manifest(workspace: Workspace) -> Manifest:
    workspace.require_manifest()
    metadata = read_metadata(workspace.manifest_path)
    table = read_table(workspace.manifest_path)
    records = tuple(
        ImageRecord(
            image_id=row["image_id"],
            uri=row["uri"],
            width=row["width"],
            height=row["height"],
            labels=tuple(row["labels"]),
            split=row["split"],
            sha256=row["sha256"],
            gt_uri=row["gt_uri"],
        )
        for row in table.to_pylist()
    )
    return Manifest(
        class_names=tuple(metadata["class_names"]),
        records=records,
        source=metadata.get("source", {}),
        content_hash=metadata.get("content_hash", ""),
    )


def write_quarantine(workspace: Workspace, items: Sequence[QuarantinedItem]) -> None:
    table = pa.Table.from_pylist(
        [{"image_id": i.image_id, "uri": i.uri, "reason": i.reason} for i in items],
        schema=QUARANTINE_SCHEMA,
    )
    write_table(workspace.quarantine_path, table, {"schema_version": MANIFEST_SCHEMA_VERSION})


def read_quarantine(workspace: Workspace) -> Iterator[QuarantinedItem]:
    if not workspace.quarantine_path.exists():
        return
    for row in read_table(workspace.quarantine_path).to_pylist():
        yield QuarantinedItem(row["image_id"], row["uri"], row["reason"])
