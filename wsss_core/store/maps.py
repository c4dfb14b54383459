"""Per-shard tables of per-image maps: CAMs and label maps.

``maps/cam/part-NNNNN.parquet`` (schema version 2):

============ ============== ===============================================
column       type           meaning
============ ============== ===============================================
image_id     string         manifest image id
class_ids    list<int16>    the K target classes, in map order
height       int32          image rows (the maps' full resolution)
width        int32          image columns
shape        list<int32>    ``[K, h, w]`` of the stored array: ``h =
                            ceil(height / stride)``, ``w = ceil(width /
                            stride)``
cams         binary         float16 little endian, C order, values in [0, 1]
class_scores list<float32>  the classifier's sigmoid score of every class
             (null)         (C entries, class id order), from one forward
                            pass at the network input size; null (or no
                            column) in shards written before it existed
============ ============== ===============================================

``maps/{seeds,grown,crf}/part-NNNNN.parquet``:

========== ============ ==================================================
column     type         meaning
========== ============ ==================================================
image_id   string       manifest image id
height     int32        rows
width      int32        columns
labels     binary       uint8 label map, C order (0 bg, k+1 class k, 255)
confidence binary (null) float16 per-pixel confidence (CRF only)
recovered  list<int16>  class ids whose grown region was restored because
           (null)       the CRF had (nearly) emptied them (CRF only,
                        ``wsss_core/recovery.py``)
background float32      the background power the image's CRF result was
_power     (null)       chosen at (CRF only, ``wsss_core/background.py``)
========== ============ ==================================================

Metadata (``wsss`` key): ``schema_version``, ``stage``, ``dtype`` of the
array columns, ``stride`` (CAM tables), and lineage: ``config_hash``,
``model_hash``, ``source_hash`` (of the shard's inputs as a whole) and
``inputs`` (image id -> hash of that image's input), and ``failed`` (image id
-> uri, reason and file stamp of the images the stage could not compute,
``wsss_core/stages/image_failures.py``). ``inputs`` lets a shard that gained
images keep the rows of the images it already had (:func:`reusable_rows`):
adding 10 images computes maps for those 10 only.

Compactness: CAMs are smooth, so they may be stored at a ``stride`` (the mean
of each ``stride x stride`` block); :func:`read_cam_shard` interpolates them
back to ``[K, height, width]`` and renormalises each map to a maximum of 1.
Label maps are always stored lossless at full resolution. Every file is zstd
compressed and written in row groups of :data:`ROW_GROUP_SIZE` images, and the
readers yield one image at a time from batches of that size, so memory does
not grow with the shard (or the dataset).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wsss_core.store import arrays
from wsss_core.store.parquet_io import iter_batches, read_metadata, write_table

MAPS_SCHEMA_VERSION = 2
CAM_TABLE_STAGES = ("cam", "affinity")  # stages whose tables hold per-class maps
ROW_GROUP_SIZE = 16  # images per Parquet row group, and per read batch

CAM_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("class_ids", pa.list_(pa.int16())),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("shape", pa.list_(pa.int32())),
        ("cams", pa.binary()),
        ("class_scores", pa.list_(pa.float32())),
    ]
)

LABEL_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("labels", pa.binary()),
        ("confidence", pa.binary()),
        ("recovered", pa.list_(pa.int16())),
        ("background_power", pa.float32()),
    ]
)


@dataclass(frozen=True)
class CamRecord:
    image_id: str
    class_ids: tuple[int, ...]
    cams: np.ndarray  # float32 [K, H, W]
    # The classifier's sigmoid score of every class (C entries), None when not stored.
    class_scores: tuple[float, ...] | None = None


@dataclass(frozen=True)
class LabelRecord:
    image_id: str
    labels: np.ndarray  # uint8 [H, W]
    confidence: np.ndarray | None = None  # float32 [H, W]
    recovered: tuple[int, ...] | None = None  # CRF only: classes restored from the grown region
    background_power: float | None = None  # CRF only: the power its result was chosen at


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


def write_cam_shard(
    path: Path,
    records: Sequence[CamRecord],
    lineage: Lineage,
    stride: int = 1,
    inputs: dict[str, str] | None = None,
    reused: pa.Table | None = None,
    stage: str = "cam",
    failed: dict[str, dict[str, str]] | None = None,
) -> None:
    """Write a shard's CAMs as float16, at ``stride`` (1: full resolution).

    ``inputs``: image id -> input hash, in shard order; ``reused``: rows kept
    from the previous file (see :func:`reusable_rows`), merged in that order.
    ``stage``: ``cam``, or another stage of per-class maps (``affinity``).
    ``failed``: image id -> why the stage could not compute it (no row).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    stored = [arrays.downsample_mean(r.cams, stride) for r in records]
    table = pa.Table.from_pydict(
        {
            "image_id": [r.image_id for r in records],
            "class_ids": [list(r.class_ids) for r in records],
            "height": [r.cams.shape[1] for r in records],
            "width": [r.cams.shape[2] for r in records],
            "shape": [list(s.shape) for s in stored],
            "cams": [arrays.encode(s, np.float16) for s in stored],
            "class_scores": [
                None if r.class_scores is None else [float(v) for v in r.class_scores]
                for r in records
            ],
        },
        schema=CAM_SCHEMA,
    )
    metadata = _metadata(stage, {"cams": "float16"}, lineage, inputs, failed)
    metadata["stride"] = stride
    table = _merge(table, reused, inputs)
    write_table(path, table, metadata, row_group_size=ROW_GROUP_SIZE)


def _renormalise(maps: np.ndarray) -> np.ndarray:
    peak = maps.reshape(maps.shape[0], -1).max(axis=1) if maps.size else np.zeros(0)
    scale = np.where(peak > 0, 1.0 / np.maximum(peak, 1e-12), 0.0).astype(np.float32)
    return np.clip(maps * scale[:, None, None], 0.0, 1.0)


def read_cam_shard(path: Path, batch_size: int = ROW_GROUP_SIZE) -> Iterator[CamRecord]:
    """CAMs at full resolution (float32 ``[K, H, W]``), one image at a time."""
    stride = None
    for batch in iter_batches(path, batch_size):
        if stride is None:
            stride = int(read_metadata(path).get("stride", 1))
        for row in batch.to_pylist():
            cams = arrays.decode(row["cams"], row["shape"], np.float16).astype(np.float32)
            height, width = row.get("height"), row.get("width")
            if height is not None and cams.shape[1:] != (height, width):
                cams = _renormalise(arrays.upsample_linear(cams, height, width, stride))
            scores = row.get("class_scores")
            yield CamRecord(
                row["image_id"],
                tuple(row["class_ids"]),
                cams,
                None if scores is None else tuple(scores),
            )


def cam_shard_has_class_scores(path: Path) -> bool:
    """True when a CAM shard has the ``class_scores`` column (older shards do not)."""
    try:
        return "class_scores" in pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError):
        return False


def write_label_shard(
    path: Path,
    stage: str,
    records: Sequence[LabelRecord],
    lineage: Lineage,
    inputs: dict[str, str] | None = None,
    reused: pa.Table | None = None,
    failed: dict[str, dict[str, str]] | None = None,
) -> None:
    """Write a shard's label maps; the other arguments as in :func:`write_cam_shard`."""
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
            "recovered": [None if r.recovered is None else list(r.recovered) for r in records],
            "background_power": [r.background_power for r in records],
        },
        schema=LABEL_SCHEMA,
    )
    dtypes = {"labels": "uint8", "confidence": "float16"}
    metadata = _metadata(stage, dtypes, lineage, inputs, failed)
    write_table(path, _merge(table, reused, inputs), metadata, row_group_size=ROW_GROUP_SIZE)


def reusable_ids(path: Path, lineage: Lineage, inputs: dict[str, str]) -> list[str]:
    """Images of the existing shard whose rows a rewrite may keep (metadata only).

    A row is kept when the file was made with the same config and model and
    that image's input hash is unchanged: only new or changed images of a
    shard are computed again.
    """
    previous = read_lineage(path)
    if previous is None or (previous.config_hash, previous.model_hash) != (
        lineage.config_hash,
        lineage.model_hash,
    ):
        return []
    metadata = read_metadata(path)
    expected = CAM_SCHEMA if metadata.get("stage") in CAM_TABLE_STAGES else LABEL_SCHEMA
    if not pq.read_schema(path).remove_metadata().equals(expected):
        return []  # an older layout: recompute rather than mix schemas
    stored = metadata.get("inputs") or {}
    return [image_id for image_id, digest in inputs.items() if stored.get(image_id) == digest]


def reusable_rows(path: Path, lineage: Lineage, inputs: dict[str, str]) -> pa.Table | None:
    """The rows :func:`reusable_ids` names, or None when there are none."""
    return rows_of(path, reusable_ids(path, lineage, inputs))


def rows_of(path: Path, keep: Sequence[str]) -> pa.Table | None:
    """The rows of ``keep``'s images, or None when ``keep`` is empty."""
    if not keep:
        return None
    table = pq.read_table(path)
    return table.filter(pc.is_in(table["image_id"], value_set=pa.array(keep)))


def _merge(table: pa.Table, reused: pa.Table | None, inputs: dict[str, str] | None) -> pa.Table:
    """New rows plus reused ones, in the shard's image order."""
    if reused is None or reused.num_rows == 0:
        return table
    merged = pa.concat_tables([reused.replace_schema_metadata(None), table])
    order = {image_id: index for index, image_id in enumerate(inputs or {})}
    ids = merged["image_id"].to_pylist()
    return merged.take(sorted(range(len(ids)), key=lambda row: order.get(ids[row], len(order))))


def read_label_shard(path: Path, batch_size: int = ROW_GROUP_SIZE) -> Iterator[LabelRecord]:
    """Label maps (and CRF confidence), one image at a time."""
    for batch in iter_batches(path, batch_size):
        for row in batch.to_pylist():
            yield label_record(row)


def label_record(row: dict[str, Any]) -> LabelRecord:
    """One row of a label table (``LABEL_SCHEMA``, as ``to_pylist`` gives it), decoded."""
    shape = (row["height"], row["width"])
    labels = arrays.decode(row["labels"], shape, np.uint8)
    confidence = None
    if row["confidence"] is not None:
        confidence = arrays.decode(row["confidence"], shape, np.float16).astype(np.float32)
    recovered = row.get("recovered")
    return LabelRecord(
        row["image_id"],
        labels,
        confidence,
        None if recovered is None else tuple(recovered),
        row.get("background_power"),
    )


def shard_paths(directory: Path) -> list[Path]:
    """A stage's shard files in shard order (``part-00000``, ``part-00001``, ...)."""
    return sorted(Path(directory).glob("part-*.parquet"))


def iter_stage_cams(directory: Path) -> Iterator[CamRecord]:
    """Every CAM of a stage directory, shard by shard, one image at a time."""
    for path in shard_paths(directory):
        yield from read_cam_shard(path)


def iter_stage_labels(directory: Path) -> Iterator[LabelRecord]:
    """Every label map of a stage directory, shard by shard, one image at a time."""
    for path in shard_paths(directory):
        yield from read_label_shard(path)


def read_lineage(path: Path) -> Lineage | None:
    """The lineage a shard was written with, or None when it is missing or foreign."""
    if not path.exists():
        return None
    try:
        metadata = read_metadata(path)
        return Lineage(metadata["config_hash"], metadata["model_hash"], metadata["source_hash"])
    except (ValueError, KeyError, OSError):
        return None


def stored_image_ids(path: Path) -> set[str]:
    """The images a shard has rows for (one column read; empty when there is no file)."""
    if not path.exists():
        return set()
    return set(pq.read_table(path, columns=["image_id"])["image_id"].to_pylist())


def read_failed(path: Path) -> dict[str, dict[str, str]]:
    """The shard's ``failed`` metadata: image id -> reason, uri and file stamp."""
    if not path.exists():
        return {}
    try:
        return dict(read_metadata(path).get("failed") or {})
    except (ValueError, OSError):
        return {}


def _metadata(
    stage: str,
    dtypes: dict[str, str],
    lineage: Lineage,
    inputs: dict[str, str] | None,
    failed: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": MAPS_SCHEMA_VERSION,
        "stage": stage,
        "dtype": dtypes,
        **lineage.as_dict(),
        "inputs": dict(inputs or {}),
        "failed": dict(failed or {}),
    }
