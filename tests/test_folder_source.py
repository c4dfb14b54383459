"""Folder + CSV ingestion: the manifest, and bad items quarantined with their reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from folder_ingest import ingest_folder
from PIL import Image

from wsss_core.data.manifest import read_manifest, read_quarantine
from wsss_core.store.workspace import Workspace


def _image(path: Path, size=(20, 10), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=128 if mode == "L" else (10, 200, 30)).save(path)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    _image(root / "images" / "good.png")
    _image(root / "images" / "grey.jpg", mode="L")
    _image(root / "images" / "wrong_gt.png")
    _image(root / "images" / "unknown.png")
    (root / "images" / "broken.png").write_bytes(b"not an image")
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(root / "masks" / "good.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "wrong_gt.png")
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "labels.csv").write_text(
        "image_id,labels,split\n"
        "good,dog;cat,train\n"
        "grey,dog,val\n"
        "broken,cat,train\n"
        "missing,cat,train\n"
        "good,cat,train\n"
        "wrong_gt,cat,train\n"
        "unknown,zebra,train\n"
    )
    return root


def test_ingest_writes_manifest_and_quarantine(source: Path, tmp_path: Path):
    workspace = Workspace(tmp_path / "ws")
    summary = ingest_folder(
        source / "images",
        source / "labels.csv",
        workspace,
        classes_file=source / "classes.txt",
        masks_dir=source / "masks",
    )
    manifest = read_manifest(workspace)
    assert manifest.class_names == ("cat", "dog")
    assert [r.image_id for r in manifest.records] == ["good", "grey"]
    good, grey = manifest.records
    assert good.labels == (0, 1) and good.split == "train"
    assert (good.width, good.height) == (20, 10)
    assert good.gt_uri is not None and grey.gt_uri is None
    assert len(good.sha256) == 64
    assert summary.ingested == 2
    assert summary.class_counts == {"cat": 1, "dog": 2}

    reasons = {item.image_id: item.reason for item in read_quarantine(workspace)}
    assert reasons["broken"].startswith("unreadable image") and "broken.png" in reasons["broken"]
    assert reasons["missing"].startswith("missing file")
    assert reasons["good"].startswith("duplicate id")
    assert reasons["wrong_gt"].startswith("ground truth size mismatch")
    assert reasons["unknown"].startswith("unknown class") and "zebra" in reasons["unknown"]
    assert summary.quarantined == {
        "unreadable image": 1,
        "missing file": 1,
        "duplicate id": 1,
        "ground truth size mismatch": 1,
        "unknown class": 1,
    }


def test_class_names_default_to_sorted_names_found(source: Path, tmp_path: Path):
    workspace = Workspace(tmp_path / "ws")
    ingest_folder(source / "images", source / "labels.csv", workspace)
    assert read_manifest(workspace).class_names == ("cat", "dog", "zebra")


def test_csv_without_labels_column_is_a_clear_error(tmp_path: Path):
    csv = tmp_path / "labels.csv"
    csv.write_text("image_id\nx\n")
    with pytest.raises(ValueError, match=r"labels\.csv: missing column"):
        ingest_folder(tmp_path, csv, Workspace(tmp_path / "ws"))


def test_manifest_missing_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="ingest data first"):
        read_manifest(Workspace(tmp_path / "empty"))


def test_folder_root_layout_is_found_without_options(source: Path, tmp_path: Path):
    from wsss_core.stages.ingest_stage import ingest

    workspace = Workspace(tmp_path / "ws")
    summary = ingest("folder", source, workspace)
    manifest = read_manifest(workspace)
    assert manifest.class_names == ("cat", "dog")  # classes.txt found
    assert manifest.by_id()["good"].gt_uri == str(source / "masks" / "good.png")
    assert manifest.source["kind"] == "folder" and manifest.source["classes"].startswith("file")
    assert summary.ingested == 2


def test_demo_source_is_replaced_not_merged(tmp_path: Path):
    from wsss_core.config import DemoConfig
    from wsss_core.stages.ingest_stage import ingest

    workspace = Workspace(tmp_path / "ws")
    ingest("demo", None, workspace, demo=DemoConfig(num_images=4, image_size=32))
    first = read_manifest(workspace)
    ingest("demo", None, workspace, demo=DemoConfig(num_images=3, image_size=32))
    second = read_manifest(workspace)
    assert len(first) == 4 and len(second.all_rows) == 3  # no 'removed' rows left behind
    assert second.source["kind"] == "demo"
    assert all(r.gt_uri for r in second.records)
