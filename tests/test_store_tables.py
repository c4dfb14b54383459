"""Workspace tables: compact CAM storage, streaming reads, readable without our code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from folder_ingest import ingest_folder
from PIL import Image

from wsss_core.store.maps import (
    ROW_GROUP_SIZE,
    CamRecord,
    LabelRecord,
    Lineage,
    iter_stage_cams,
    iter_stage_labels,
    read_cam_shard,
    read_label_shard,
    write_cam_shard,
    write_label_shard,
)
from wsss_core.store.parquet_io import write_table
from wsss_core.store.workspace import Workspace

LINEAGE = Lineage(config_hash="c" * 16, model_hash="m" * 16, source_hash="s" * 16)


def smooth_cams(seed: int, classes: int = 3, height: int = 75, width: int = 100) -> np.ndarray:
    """Gaussian blobs normalised to a maximum of 1, like real CAMs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    maps = []
    for _ in range(classes):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        sigma = rng.uniform(12, 24)  # a stride-16 network cannot make sharper maps
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        maps.append(blob / blob.max())
    return np.stack(maps).astype(np.float32)


def test_cams_at_a_stride_come_back_at_full_size_and_close(tmp_path: Path):
    records = [CamRecord(f"img{i}", (0, 2, 5), smooth_cams(i)) for i in range(3)]
    full, strided = tmp_path / "full.parquet", tmp_path / "strided.parquet"
    write_cam_shard(full, records, LINEAGE)
    write_cam_shard(strided, records, LINEAGE, stride=4)
    for original, restored in zip(records, read_cam_shard(strided), strict=True):
        assert restored.cams.shape == (3, 75, 100) and restored.cams.dtype == np.float32
        error = np.abs(restored.cams - original.cams)
        assert error.max() < 0.05 and error.mean() < 0.005
        np.testing.assert_allclose(restored.cams.reshape(3, -1).max(axis=1), 1.0)
    assert strided.stat().st_size * 5 < full.stat().st_size
    row = pq.read_table(strided).to_pylist()[0]
    assert row["shape"] == [3, 19, 25] and (row["height"], row["width"]) == (75, 100)
    assert json.loads(pq.read_schema(strided).metadata[b"wsss"])["stride"] == 4


def test_zero_maps_and_images_without_classes_survive_a_stride(tmp_path: Path):
    cams = np.zeros((2, 9, 7), np.float32)
    records = [CamRecord("a", (1, 3), cams), CamRecord("b", (), np.zeros((0, 9, 7), np.float32))]
    write_cam_shard(tmp_path / "p.parquet", records, LINEAGE, stride=3)
    a, b = read_cam_shard(tmp_path / "p.parquet")
    assert a.cams.shape == (2, 9, 7) and not a.cams.any()
    assert b.cams.shape == (0, 9, 7)


def test_version_1_cam_tables_still_read(tmp_path: Path):
    schema = pa.schema(
        [
            ("image_id", pa.string()),
            ("class_ids", pa.list_(pa.int16())),
            ("shape", pa.list_(pa.int32())),
            ("cams", pa.binary()),
        ]
    )
    cams = smooth_cams(0, classes=1, height=4, width=5)
    row = {"image_id": "a", "class_ids": [2], "shape": [1, 4, 5],
           "cams": cams.astype("<f2").tobytes()}  # fmt: skip
    write_table(tmp_path / "v1.parquet", pa.Table.from_pylist([row], schema=schema), {})
    (record,) = read_cam_shard(tmp_path / "v1.parquet")
    np.testing.assert_allclose(record.cams, cams, atol=1e-3)


def test_shards_are_written_in_row_groups_and_read_in_order(tmp_path: Path):
    count = ROW_GROUP_SIZE * 2 + 3
    labels = [LabelRecord(f"i{n:03d}", np.full((4, 5), n % 250, np.uint8)) for n in range(count)]
    path = tmp_path / "maps" / "seeds" / "part-00000.parquet"
    write_label_shard(path, "seeds", labels, LINEAGE)
    assert pq.ParquetFile(path).num_row_groups == 3
    restored = list(read_label_shard(path, batch_size=5))
    assert [r.image_id for r in restored] == [r.image_id for r in labels]
    assert all((a.labels == b.labels).all() for a, b in zip(labels, restored, strict=True))


def test_stage_iteration_goes_shard_by_shard(tmp_path: Path):
    directory = tmp_path / "maps" / "cam"
    for shard in range(3):
        records = [CamRecord(f"s{shard}-{i}", (0,), smooth_cams(i, 1, 6, 6)) for i in range(2)]
        write_cam_shard(directory / f"part-{shard:05d}.parquet", records, LINEAGE)
    assert [r.image_id for r in iter_stage_cams(directory)] == [
        f"s{s}-{i}" for s in range(3) for i in range(2)
    ]
    directory = tmp_path / "maps" / "crf"
    for shard in (1, 0):  # written out of order, read in shard order
        records = [LabelRecord(f"s{shard}-{i}", np.full((3, 4), i, np.uint8)) for i in range(2)]
        write_label_shard(directory / f"part-{shard:05d}.parquet", "crf", records, LINEAGE)
    assert [r.image_id for r in iter_stage_labels(directory)] == ["s0-0", "s0-1", "s1-0", "s1-1"]


@pytest.fixture
def workspace_tables(tmp_path: Path) -> dict[str, Path]:
    """One table of each kind the ingest and map stages write."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (6, 4)).save(root / "images" / "a.png")
    (root / "labels.csv").write_text("image_id,labels\na,cat\nb,dog\n")
    workspace = Workspace(tmp_path / "ws")
    ingest_folder(root / "images", root / "labels.csv", workspace)
    cam = workspace.shard_path("cam", 0)
    write_cam_shard(cam, [CamRecord("a", (0,), smooth_cams(0, 1, 4, 6))], LINEAGE, stride=2)
    crf = workspace.shard_path("crf", 0)
    labels = np.array([[0, 1, 255, 1, 1, 0]] * 4, np.uint8)
    confidence = np.full((4, 6), 0.5, np.float32)
    write_label_shard(crf, "crf", [LabelRecord("a", labels, confidence)], LINEAGE)
    return {
        "manifest": workspace.manifest_path,
        "quarantine": workspace.quarantine_path,
        "cam": cam,
        "crf": crf,
    }


def test_every_table_reads_with_plain_pandas_and_pyarrow(workspace_tables):
    manifest = pd.read_parquet(workspace_tables["manifest"])
    assert list(manifest.columns) == [
        "image_id", "uri", "width", "height", "labels", "split", "sha256", "gt_uri", "status"
    ]  # fmt: skip
    assert manifest.loc[0, "status"] == "ok" and list(manifest.loc[0, "labels"]) == [0]
    quarantine = pd.read_parquet(workspace_tables["quarantine"])
    assert quarantine.loc[0, "reason"].startswith("missing file")
    metadata = json.loads(pq.read_schema(workspace_tables["manifest"]).metadata[b"wsss"])
    assert metadata["class_names"] == ["cat", "dog"] and metadata["schema_version"] == 2

    cam = pd.read_parquet(workspace_tables["cam"]).iloc[0]
    maps = np.frombuffer(cam["cams"], "<f2").reshape(cam["shape"])
    assert maps.shape == (1, 2, 3) and (cam["height"], cam["width"]) == (4, 6)
    crf = pq.read_table(workspace_tables["crf"]).to_pylist()[0]
    labels = np.frombuffer(crf["labels"], np.uint8).reshape(crf["height"], crf["width"])
    confidence = np.frombuffer(crf["confidence"], "<f2").reshape(labels.shape)
    assert labels[0, 2] == 255 and confidence[0, 0] == np.float16(0.5)
    for path in workspace_tables.values():
        assert "schema_version" in json.loads(pq.read_schema(path).metadata[b"wsss"])


def test_every_table_reads_with_duckdb(workspace_tables):
    duckdb = pytest.importorskip("duckdb")
    connection = duckdb.connect()
    for name, path in workspace_tables.items():
        count = connection.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0]
        assert count >= 1, name
    reason = connection.execute(
        f"SELECT reason FROM read_parquet('{workspace_tables['quarantine']}')"
    ).fetchone()[0]
    assert reason.startswith("missing file")
    labels = connection.execute(
        f"SELECT labels FROM read_parquet('{workspace_tables['manifest']}') WHERE status = 'ok'"
    ).fetchone()[0]
    assert labels == [0]
