"""Workspace tables: round trips, atomic writes, lineage, readable with plain pyarrow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wsss_core.store import arrays
from wsss_core.store.maps import (
    CamRecord,
    LabelRecord,
    Lineage,
    read_cam_shard,
    read_label_shard,
    read_lineage,
    write_cam_shard,
    write_label_shard,
)
from wsss_core.store.parquet_io import read_metadata, read_table, write_table

LINEAGE = Lineage(config_hash="c" * 16, model_hash="m" * 16, source_hash="s" * 16)


def test_array_cells_round_trip_and_reject_wrong_sizes():
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    restored = arrays.decode(arrays.encode(array, np.float16), (2, 3, 4), np.float16)
    np.testing.assert_allclose(restored, array, atol=1e-3)
    with pytest.raises(ValueError, match="needs"):
        arrays.decode(b"\x00" * 5, (2, 3), np.uint8)


def test_cam_shard_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    records = [
        CamRecord("a", (3, 1), rng.random((2, 5, 7), dtype=np.float32)),
        CamRecord("b", (), np.zeros((0, 4, 4), np.float32)),
    ]
    path = tmp_path / "part-00000.parquet"
    write_cam_shard(path, records, LINEAGE)
    restored = list(read_cam_shard(path))
    assert [r.image_id for r in restored] == ["a", "b"]
    assert restored[0].class_ids == (3, 1)
    np.testing.assert_allclose(restored[0].cams, records[0].cams, atol=1e-3)
    assert restored[1].cams.shape == (0, 4, 4)
    assert read_lineage(path) == LINEAGE


def test_label_shard_round_trip_is_lossless(tmp_path: Path):
    labels = np.random.default_rng(1).choice([0, 3, 255], size=(6, 9)).astype(np.uint8)
    confidence = np.linspace(0, 1, 54, dtype=np.float32).reshape(6, 9)
    path = tmp_path / "part-00000.parquet"
    write_label_shard(path, "crf", [LabelRecord("x", labels, confidence)], LINEAGE)
    (restored,) = read_label_shard(path)
    np.testing.assert_array_equal(restored.labels, labels)
    np.testing.assert_allclose(restored.confidence, confidence, atol=1e-3)
    assert read_metadata(path)["stage"] == "crf"


def test_tables_are_readable_with_plain_pyarrow(tmp_path: Path):
    labels = np.full((2, 3), 7, np.uint8)
    path = tmp_path / "part-00000.parquet"
    write_label_shard(path, "grown", [LabelRecord("x", labels)], LINEAGE)
    table = pq.read_table(path)
    row = table.to_pylist()[0]
    decoded = np.frombuffer(row["labels"], np.uint8).reshape(row["height"], row["width"])
    np.testing.assert_array_equal(decoded, labels)


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "table.parquet"
    write_table(path, pa.table({"x": [1, 2]}), {"version": 1})

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", explode)
    with pytest.raises(OSError, match="disk full"):
        write_table(path, pa.table({"x": [3]}), {"version": 2})
    assert read_table(path).column("x").to_pylist() == [1, 2]
    assert read_metadata(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]  # no temp file left


def test_missing_and_foreign_tables_give_clear_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing"):
        read_table(tmp_path / "nope.parquet")
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    with pytest.raises(ValueError, match="not a wsss table"):
        read_metadata(foreign)
    assert read_lineage(foreign) is None


def test_the_sweep_removes_killed_writes_everywhere_but_the_database(tmp_path: Path):
    from wsss_core.store.workspace import Workspace

    workspace = Workspace(tmp_path / "ws")
    leftovers = [
        workspace.root / ".manifest.parquet.abc.tmp",
        workspace.root / "maps" / "crf" / ".part-00001.parquet.x1.tmp",
        workspace.root / "masks" / ".img_7.png.tmp",
        workspace.root / "review" / "published" / ".img_7.png.tmp",
        workspace.root / "approved" / ".img_7.png.tmp",
        workspace.root / "ground_truth" / ".img_7.png.tmp",
        workspace.root / "models" / ".candidate.pt.q9.tmp",
    ]
    kept = [
        workspace.root / "fiftyone-db" / ".mongod.tmp",  # the database's own files
        workspace.root / "masks" / "img_7.png",  # a finished output
    ]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert workspace.remove_leftover_temp_files() == len(leftovers)
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in kept)
