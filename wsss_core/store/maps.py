"""Per-shard tables of per-image maps: CAMs and label maps.

``maps/cam/part-NNNNN.parquet``:

========= ============== =================================================
column    type           meaning
========= ============== =================================================
image_id  string         manifest image id
class_ids list<int16>    the K target classes, in map order
shape     list<int32>    ``[K, H, W]``
cams      binary         float16 little endian, C order, values in [0, 1]
========= ============== =================================================

``maps/{seeds,grown,crf}/part-NNNNN.parquet``:

========== ============ ==================================================
column     type         meaning
========== ============ ==================================================
image_id   string       manifest image id
height     int32        rows
width      int32        columns
labels     binary       uint8 label map, C order (0 bg, k+1 class k, 255)
confidence binary (null) float16 per-pixel confidence (CRF only)
========== ============ ==================================================

Metadata (``wsss`` key): ``schema_version``, ``stage``, ``dtype`` of the
array columns, and lineage: ``config_hash``, ``model_hash``, ``source_hash``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from wsss_core.store import arrays
from wsss_core.store.parquet_io import read_metadata, read_table, write_table

MAPS_SCHEMA_VERSION = 1

CAM_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("class_ids", pa.list_(pa.int16())),
        ("shape", pa.list_(pa.int32())),
        ("cams", pa.binary()),
    ]
)

LABEL_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("labels", pa.binary()),
        ("confidence", pa.binary()),
    ]
)


@dataclass(frozen=True)
class CamRecord:
    image_id: str
    class_ids: tuple[int, ...]
    cams: np.ndarray  # float32 [K, H, W]


@dataclass(frozen=True)
class LabelRecord:
    image_id: str
    labels: np.ndarray  # uint8 [H, W]
    confidence: np.ndarray | None = None  # float32 [H, W]


@dataclass(frozen=True)
class Lineage:
    """What produced a table: re-running with equal lineage would give equal content."""

    config_hash: str
    model_hash: str
    source_hash: str

    def as_dict(self) -> dict[str, str]:
        return {
            "config_hash": self.config_hash,
            "model_hash": self.model_hash,
            "source_hash": self.source_hash,
        }


def write_cam_shard(path: Path, records: Sequence[CamRecord], lineage: Lineage) -> None:
    table = pa.Table.from_pydict(
        {
            "image_id": [r.image_id for r in records],
            "class_ids": [list(r.class_ids) for r in records],
            "shape": [list(r.cams.shape) for r in records],
            "cams": [arrays.encode(r.cams, np.float16) for r in records],
        },
        schema=CAM_SCHEMA,
    )
    write_table(path, table, _metadata("cam", {"cams": "float16"}, lineage))


def read_cam_shard(path: Path) -> Iterator[CamRecord]:
    for row in read_table(path).to_pylist():
        cams = arrays.decode(row["cams"], row["shape"], np.float16).astype(np.float32)
        yield CamRecord(row["image_id"], tuple(row["class_ids"]), cams)


def write_label_shard(
    path: Path, stage: str, records: Sequence[LabelRecord], lineage: Lineage
) -> None:
    table = pa.Table.from_pydict(
        {
            "image_id": [r.image_id for r in records],
            "height": [r.labels.shape[0] for r in records],
            "width": [r.labels.shape[1] for r in records],
            "labels": [arrays.encode(r.labels, np.uint8) for r in records],
            "confidence": [
                None if r.confidence is None else arrays.encode(r.confidence, np.float16)
                for r in records
            ],
        },
        schema=LABEL_SCHEMA,
    )
    dtypes = {"labels": "uint8", "confidence": "float16"}
    write_table(path, table, _metadata(stage, dtypes, lineage))


def read_label_shard(path: Path) -> Iterator[LabelRecord]:
    for row in read_table(path).to_pylist():
        shape = (row["height"], row["width"])
        labels = arrays.decode(row["labels"], shape, np.uint8)
        confidence = None
        if row["confidence"] is not None:
            confidence = arrays.decode(row["confidence"], shape, np.float16).astype(np.float32)
        yield LabelRecord(row["image_id"], labels, confidence)


def read_lineage(path: Path) -> Lineage | None:
    """The lineage a shard was written with, or None when it is missing or foreign."""
    if not path.exists():
        return None
    try:
        metadata = read_metadata(path)
        return Lineage(metadata["config_hash"], metadata["model_hash"], metadata["source_hash"])
    except (ValueError, KeyError, OSError):
        return None


def _metadata(stage: str, dtypes: dict[str, str], lineage: Lineage) -> dict[str, Any]:
    return {
        "schema_version": MAPS_SCHEMA_VERSION,
        "stage": stage,
        "dtype": dtypes,
        **lineage.as_dict(),
    }
