"""The manifest: one row per image a source listed, the single input of every later stage.

Schema (``manifest.parquet``, schema version 2):

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
status   string           ``ok``, ``unlabeled`` (usable for inference, not
                          for training), ``removed`` (gone from the source)
                          or ``quarantined`` (listed, but now fails a check;
                          the reason is in ``quarantine.parquet``)
======== ================ ==================================================

File metadata: ``schema_version``, ``class_names`` (ordered), ``source``,
``content_hash``. Version-1 files (no ``status`` column) read as ``ok`` /
``unlabeled``.

Rows are never reordered or dropped by a re-ingest: new images are appended,
rows whose image disappeared keep their place with status ``removed``. Map
shards are fixed-size chunks of *row positions*, so existing shards keep their
images; :attr:`Manifest.records` and each shard hold only the usable rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from wsss_core.store.parquet_io import read_metadata, read_table, write_table
from wsss_core.store.update_lock import exclusive_update
from wsss_core.store.workspace import Workspace

MANIFEST_SCHEMA_VERSION = 2

STATUS_OK = "ok"
STATUS_UNLABELED = "unlabeled"
STATUS_REMOVED = "removed"
STATUS_QUARANTINED = "quarantined"
# Rows every stage processes (unlabeled images get maps too; training skips them).
USABLE_STATUSES = frozenset({STATUS_OK, STATUS_UNLABELED})
STATUSES = (STATUS_OK, STATUS_UNLABELED, STATUS_REMOVED, STATUS_QUARANTINED)
# The splits the classifier learns from (train) and is selected on (val).
TRAINING_SPLITS = frozenset({"train", "val"})

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
        ("status", pa.string()),
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
    status: str = STATUS_OK

    @property
    def usable(self) -> bool:
        """True for rows the stages process (``ok`` and ``unlabeled``)."""
        return self.status in USABLE_STATUSES


@dataclass(frozen=True)
class QuarantinedItem:
    image_id: str
    uri: str
    reason: str

    @property
    def category(self) -> str:
        """The reason's leading category, e.g. ``missing file``."""
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True)
class Manifest:
    """A workspace's images.

    ``records`` are the usable rows (status ``ok`` / ``unlabeled``) in manifest
    order: what training, stages, evaluation and publishing see. ``rows`` holds
    every row, removed ones included, and fixes the shard boundaries; when not
    given it equals ``records``.
    """

    class_names: tuple[str, ...]
    records: tuple[ImageRecord, ...]
    source: dict[str, str] = field(default_factory=dict)
    content_hash: str = ""
    rows: tuple[ImageRecord, ...] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def all_rows(self) -> tuple[ImageRecord, ...]:
        return self.records if self.rows is None else self.rows

    def split(self, name: str) -> list[ImageRecord]:
        return [record for record in self.records if record.split == name]

    def shards(self, shard_size: int) -> list[tuple[ImageRecord, ...]]:
        """Shard ``i``: the usable rows among row positions ``i*size .. (i+1)*size - 1``.

        Boundaries depend on row positions only, so appending images or marking
        one removed never moves an image to another shard.
        """
        rows = self.all_rows
        return [
            tuple(record for record in rows[start : start + shard_size] if record.usable)
            for start in range(0, len(rows), shard_size)
        ]

    def by_id(self) -> dict[str, ImageRecord]:
        return {record.image_id: record for record in self.records}

    @property
    def training_hash(self) -> str:
        """Hash of what training sees: the class list and the labelled train/val rows.

        Images added to other splits, or without labels, leave it unchanged, so
        they never make a trained classifier look out of date.
        """
        digest = hashlib.sha256("\n".join(self.class_names).encode())
        for record in self.records:
            if record.split in TRAINING_SPLITS and record.labels:
                digest.update(
                    f"{record.image_id}|{record.sha256}|{record.labels}|{record.split}".encode()
                )
        return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_hash(records: Sequence[ImageRecord], class_names: Sequence[str]) -> str:
    """Hash of the usable rows' ids, pixels, labels and splits, and of the class list."""
    digest = hashlib.sha256("\n".join(class_names).encode())
    for record in records:
        if record.usable:
            digest.update(
                f"{record.image_id}|{record.sha256}|{record.labels}|{record.split}".encode()
            )
    return digest.hexdigest()[:16]


def write_manifest(
    workspace: Workspace,
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    source: dict[str, str],
) -> Manifest:
    """Write every row (any status) in the given order; returns the manifest as read back."""
    ids = [record.image_id for record in records]
    if len(set(ids)) != len(ids):
        raise ValueError("manifest image ids must be unique")
    bad = sorted({record.status for record in records} - set(STATUSES))
    if bad:
        raise ValueError(f"unknown manifest status {bad}; expected one of {STATUSES}")
    columns = {
        "image_id": ids,
        "uri": [record.uri for record in records],
        "width": [record.width for record in records],
        "height": [record.height for record in records],
        "labels": [list(record.labels) for record in records],
        "split": [record.split for record in records],
        "sha256": [record.sha256 for record in records],
        "gt_uri": [record.gt_uri for record in records],
        "status": [record.status for record in records],
    }
    table = pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
    content_hash = _manifest_hash(records, class_names)
    metadata = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "class_names": list(class_names),
        "source": source,
        "content_hash": content_hash,
    }
    with exclusive_update(workspace.manifest_path):  # not inside another's read-modify-write
        write_table(workspace.manifest_path, table, metadata)
    rows = tuple(records)
    usable = tuple(record for record in rows if record.usable)
    return Manifest(tuple(class_names), usable, dict(source), content_hash, rows)


def read_manifest(workspace: Workspace) -> Manifest:
    workspace.require_manifest()
    metadata = read_metadata(workspace.manifest_path)
    table = read_table(workspace.manifest_path)
    has_status = "status" in table.column_names
    rows = tuple(
        ImageRecord(
            image_id=row["image_id"],
            uri=row["uri"],
            width=row["width"],
            height=row["height"],
            labels=tuple(row["labels"]),
            split=row["split"],
            sha256=row["sha256"],
            gt_uri=row["gt_uri"],
            status=(
                row["status"] if has_status else (STATUS_OK if row["labels"] else STATUS_UNLABELED)
            ),
        )
        for row in table.to_pylist()
    )
    return Manifest(
        class_names=tuple(metadata["class_names"]),
        records=tuple(record for record in rows if record.usable),
        source=metadata.get("source", {}),
        content_hash=metadata.get("content_hash", ""),
        rows=rows,
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
