"""PASCAL VOC layout: labels from XML objects, splits from ImageSets, palette ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_core.data.images import load_label_map, voc_palette
from wsss_core.data.manifest import read_manifest, read_quarantine
from wsss_core.data.sources import VOC_CLASSES, IngestOptions
from wsss_core.data.voc_source import parse_voc_xml
from wsss_core.stages.ingest_stage import ingest
from wsss_core.store.workspace import Workspace


def _xml(objects: list[tuple[str, int]]) -> str:
    body = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult></object>"
        for name, difficult in objects
    )
    return f"<annotation><folder>VOC</folder>{body}</annotation>"


def make_voc(root: Path, images: dict[str, list[tuple[str, int]]], splits=None, gt=()) -> Path:
    for folder in ("JPEGImages", "Annotations", "SegmentationClass"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index, (image_id, objects) in enumerate(images.items()):
        Image.new("RGB", (16, 12), (index * 30, 90, 20)).save(
            root / "JPEGImages" / f"{image_id}.jpg"
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(objects))
    for image_id in gt:
        mask = Image.fromarray(np.where(np.eye(12, 16) > 0, 8, 0).astype(np.uint8), mode="L")
        mask = mask.convert("P")
        mask.putpalette(voc_palette())
        mask.save(root / "SegmentationClass" / f"{image_id}.png")
    for split, ids in (splits or {}).items():
        folder = root / "ImageSets" / "Segmentation"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return make_voc(
        tmp_path / "VOCdevkit" / "VOC2012",
        {
            "2008_000001": [("dog", 0), ("person", 1)],
            "2008_000002": [("cat", 0)],
            "2008_000003": [("person", 1)],
            "2008_000004": [("dog", 0)],
        },
        splits={
            "train": ["2008_000001", "2008_000002"],
            "val": ["2008_000003", "2008_000004"],
            "trainval": ["2008_000001", "2008_000002", "2008_000003", "2008_000004"],
        },
        gt=["2008_000001"],
    )


def test_real_voc_uses_the_20_classes_and_all_splits_but_trainval(voc: Path, tmp_path: Path):
    workspace = Workspace(tmp_path / "ws")
    summary = ingest("voc", voc, workspace)
    manifest = read_manifest(workspace)
    assert manifest.class_names == VOC_CLASSES
    assert manifest.source["classes"] == "the 20 VOC classes"
    assert manifest.source["splits"] == "train,val"
    rows = manifest.by_id()
    assert [r.split for r in manifest.records] == ["train", "train", "val", "val"]
    assert rows["2008_000001"].labels == (VOC_CLASSES.index("dog"), VOC_CLASSES.index("person"))
    assert load_label_map(rows["2008_000001"].gt_uri).max() == 8  # palette indices
    assert rows["2008_000002"].gt_uri is None
    assert summary.class_counts["dog"] == 2 and summary.class_counts["aeroplane"] == 0


def test_difficult_objects_can_be_left_out(voc: Path, tmp_path: Path):
    workspace = Workspace(tmp_path / "ws")
    summary = ingest("voc", voc, workspace, IngestOptions(include_difficult=False))
    rows = read_manifest(workspace).by_id()
    assert rows["2008_000001"].labels == (VOC_CLASSES.index("dog"),)
    assert rows["2008_000003"].status == "unlabeled"  # only a difficult person
    assert summary.unlabeled == 1


def test_split_option_selects_image_sets(voc: Path, tmp_path: Path):
    workspace = Workspace(tmp_path / "ws")
    ingest("voc", voc, workspace, IngestOptions(split="val"))
    assert [r.image_id for r in read_manifest(workspace).records] == ["2008_000003", "2008_000004"]
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Segmentation/test\.txt"):
        ingest("voc", voc, Workspace(tmp_path / "ws2"), IngestOptions(split="test"))


def test_ingesting_another_split_later_keeps_the_first(voc: Path, tmp_path: Path):
    workspace = Workspace(tmp_path / "ws")
    ingest("voc", voc, workspace, IngestOptions(split="train"))
    summary = ingest("voc", voc, workspace, IngestOptions(split="val"))
    manifest = read_manifest(workspace)
    assert [r.image_id for r in manifest.records] == [f"2008_00000{i}" for i in (1, 2, 3, 4)]
    assert summary.removed == 0 and summary.new == 2


def test_custom_voc_layout_uses_the_names_found(tmp_path: Path):
    root = make_voc(tmp_path / "shapes", {"a": [("square", 0)], "b": [("circle", 0)]})
    workspace = Workspace(tmp_path / "ws")
    ingest("voc", root, workspace)
    manifest = read_manifest(workspace)
    assert manifest.class_names == ("circle", "square")
    assert manifest.source["classes"] == "names found, sorted"
    assert manifest.source["splits"] == "all annotations"  # no ImageSets: every XML


def test_custom_voc_layout_with_a_classes_file(tmp_path: Path):
    root = make_voc(tmp_path / "shapes", {"a": [("square", 0)], "b": [("hexagon", 0)]})
    (root / "classes.txt").write_text("square\ncircle\n")
    workspace = Workspace(tmp_path / "ws")
    summary = ingest("voc", root, workspace)
    manifest = read_manifest(workspace)
    assert manifest.class_names == ("square", "circle")
    assert manifest.source["classes"].startswith("file ")
    reasons = {q.image_id: q.reason for q in read_quarantine(workspace)}
    assert reasons["b"].startswith("unknown class") and "hexagon" in reasons["b"]
    assert summary.ingested == 1


def test_malformed_xml_and_missing_annotation_are_quarantined(tmp_path: Path):
    root = make_voc(tmp_path / "shapes", {"a": [("square", 0)], "b": [], "c": [("x", 0)]})
    (root / "Annotations" / "b.xml").write_text("<annotation><object><name>sq")
    (root / "Annotations" / "c.xml").unlink()
    Image.new("RGB", (4, 4)).save(root / "JPEGImages" / "c.jpg")
    splits = root / "ImageSets" / "Main"
    splits.mkdir(parents=True)
    (splits / "train.txt").write_text("a\nb\nc\n")
    (splits / "square_train.txt").write_text("a  1\n")  # a per-class list: not a split
    workspace = Workspace(tmp_path / "ws")
    ingest("voc", root, workspace)
    reasons = {q.image_id: q.reason for q in read_quarantine(workspace)}
    assert reasons["b"].startswith("malformed annotation") and "b.xml" in reasons["b"]
    assert reasons["c"].startswith("missing file") and "c.xml" in reasons["c"]
    assert [r.image_id for r in read_manifest(workspace).records] == ["a"]


def test_parse_voc_xml_rejects_bad_difficult_flags(tmp_path: Path):
    path = tmp_path / "x.xml"
    obj = "<object><name>a</name><difficult>maybe</difficult></object>"
    path.write_text(f"<annotation>{obj}</annotation>")
    with pytest.raises(Exception, match="difficult"):
        parse_voc_xml(path)
