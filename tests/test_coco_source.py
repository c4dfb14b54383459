"""COCO instances JSON: labels from annotations, masks from polygons / RLE on request."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from coco_rle import rle_counts_to_string, rle_encode
from PIL import Image

from wsss_core.data.coco_masks import (
    polygons_to_mask,
    rle_counts_from_string,
    rle_decode,
    segmentation_to_mask,
)
from wsss_core.data.images import load_label_map
from wsss_core.data.manifest import read_manifest, read_quarantine
from wsss_core.data.sources import IngestOptions
from wsss_core.stages.ingest_stage import ingest
from wsss_core.store.workspace import Workspace

# Published (counts, string) pairs for COCO's compressed RLE.
RLE_STRINGS = [
    ([0, 6, 1, 3], "061M"),
    ([0, 6, 1], "061"),
    ([0, 6, 1, 1], "061K"),
    ([0, 6, 1, 5], "061O"),
    ([0, 6, 1, 6], "0610"),
    ([0, 1, 1, 2, 1, 3, 1, 4, 1], "011101010"),
    ([0, 1024], "0PP1"),
]


@pytest.mark.parametrize(("counts", "text"), RLE_STRINGS)
def test_compressed_rle_strings(counts, text):
    assert rle_counts_to_string(counts) == text
    assert rle_counts_from_string(text) == counts
    assert rle_counts_from_string(text.encode()) == counts


def test_rle_round_trip_is_column_major():
    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = rng.integers(1, 30, 2)
        mask = rng.random((height, width)) < rng.random()
        counts = rle_encode(mask)
        assert rle_counts_from_string(rle_counts_to_string(counts)) == counts
        np.testing.assert_array_equal(rle_decode(counts, height, width), mask)
    # 2x3 mask, column-major: pixels (0,0) (1,0) | (0,1) (1,1) | (0,2) (1,2)
    expected = np.array([[0, 1, 0], [0, 1, 1]], bool)
    np.testing.assert_array_equal(rle_decode([2, 2, 1, 1], 2, 3), expected)


def test_malformed_rle_is_a_value_error():
    with pytest.raises(ValueError, match="covers"):
        rle_decode([1, 2], 2, 2)
    with pytest.raises(ValueError, match="ends inside"):
        rle_counts_from_string("0P")  # 'P' announces another group
    with pytest.raises(ValueError, match="polygon"):
        polygons_to_mask([[1, 2, 3]], 4, 4)
    with pytest.raises(ValueError, match="RLE size"):
        segmentation_to_mask({"counts": [4], "size": [1, 4]}, 2, 2)


def test_polygon_fills_its_inside():
    mask = polygons_to_mask([[2, 2, 7, 2, 7, 5, 2, 5]], 8, 10)
    assert mask[3, 4] and not mask[0, 0] and not mask[7, 9]
    assert mask.sum() == 6 * 4  # x 2..7, y 2..5 inclusive


def _coco(tmp_path: Path, split="val2017", images=None, annotations=None) -> Path:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / split).mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "odd.jpg"):
        Image.new("RGB", (20, 10), (40, 40, 40)).save(root / split / name)
    full = np.ones((10, 20), bool)
    data = {
        "images": images
        or [
            {"id": 1, "file_name": "a.jpg", "width": 20, "height": 10},
            {"id": 2, "file_name": "b.jpg", "width": 20, "height": 10},
            {"id": 3, "file_name": "c.jpg", "width": 20, "height": 10},
            {"id": 4, "file_name": "odd.jpg", "width": 30, "height": 10},
        ],
        "annotations": annotations
        or [
            # a: a cat polygon, and a small dog RLE on top of it (drawn later: smaller)
            {
                "id": 10,
                "image_id": 1,
                "category_id": 17,
                "iscrowd": 0,
                "segmentation": [[0, 0, 9, 0, 9, 9, 0, 9]],
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 18,
                "iscrowd": 1,
                "segmentation": {
                    "counts": rle_counts_to_string(rle_encode(_box(2, 4, 2, 4))),
                    "size": [10, 20],
                },
            },
            # b: a whole-image dog, uncompressed RLE
            {
                "id": 12,
                "image_id": 2,
                "category_id": 18,
                "iscrowd": 1,
                "segmentation": {"counts": rle_encode(full), "size": [10, 20]},
            },
            {"id": 13, "image_id": 4, "category_id": 17, "segmentation": [[0, 0, 5, 0, 5, 5]]},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
    }
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def _box(top: int, bottom: int, left: int, right: int) -> np.ndarray:
    mask = np.zeros((10, 20), bool)
    mask[top:bottom, left:right] = True
    return mask


def test_labels_classes_and_split_from_the_dataset_folder(tmp_path: Path):
    root = _coco(tmp_path)
    workspace = Workspace(tmp_path / "ws")
    summary = ingest("coco", root, workspace)
    manifest = read_manifest(workspace)
    assert manifest.class_names == ("cat", "dog")  # category ids 17, 18
    assert manifest.source["classes"] == "COCO categories, by id"
    rows = manifest.by_id()
    assert rows["a"].labels == (0, 1) and rows["b"].labels == (1,)
    assert rows["c"].status == "unlabeled" and rows["a"].split == "val"
    assert rows["a"].uri == str(root / "val2017" / "a.jpg")
    assert rows["a"].gt_uri is None  # masks only on request
    assert summary.class_counts == {"cat": 2, "dog": 2}


def test_masks_rasterised_on_request(tmp_path: Path):
    root = _coco(tmp_path)
    workspace = Workspace(tmp_path / "ws")
    json_path = root / "annotations" / "instances_val2017.json"
    ingest("coco", json_path, workspace, IngestOptions(rasterize_masks=True))
    rows = read_manifest(workspace).by_id()
    a = load_label_map(rows["a"].gt_uri)
    assert rows["a"].gt_uri == str(workspace.ground_truth_path("a"))
    assert a[0, 0] == 1 and a[3, 3] == 2 and a[0, 15] == 0  # cat, dog on top, background
    assert (load_label_map(rows["b"].gt_uri) == 2).all()
    assert (load_label_map(rows["c"].gt_uri) == 0).all()
    reasons = {q.image_id: q.reason for q in read_quarantine(workspace)}
    # The JSON says 30x10 for odd.jpg, the file is 20x10.
    assert reasons["odd"].startswith("ground truth size mismatch")


def test_bad_entries_quarantine_only_what_they_concern(tmp_path: Path):
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 20, "height": 10},
        {"id": 2, "file_name": "b.jpg", "width": 20, "height": 10},
        {"id": 3, "file_name": "../../../c.jpg", "width": 20, "height": 10},
        {"id": 2, "file_name": "c.jpg", "width": 20, "height": 10},
        {"file_name": "no-id.jpg"},
    ]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 17, "segmentation": [[0, 0, 4, 0, 4, 4]]},
        {"id": 2, "image_id": 2, "category_id": 99, "segmentation": []},
        {"id": 3, "image_id": 77, "category_id": 17, "segmentation": []},
        "not an object",
    ]
    root = _coco(tmp_path, images=images, annotations=annotations)
    workspace = Workspace(tmp_path / "ws")
    summary = ingest("coco", root, workspace, IngestOptions(split="val2017"))
    assert [r.image_id for r in read_manifest(workspace).records] == ["a"]
    reasons = [q.reason for q in read_quarantine(workspace)]
    categories = sorted(r.split(":")[0] for r in reasons)
    assert categories == [
        "duplicate id",
        "malformed annotation",
        "malformed annotation",
        "malformed annotation",
        "path escapes root",
        "unknown class",
    ]
    assert any("category_id 99" in r for r in reasons)
    assert any("image_id 77" in r for r in reasons)
    assert summary.ingested == 1


def test_a_file_that_is_not_coco_json_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "broken.json"
    path.write_text("{ not json")
    with pytest.raises(ValueError, match=r"broken\.json: not a readable JSON"):
        ingest("coco", path, Workspace(tmp_path / "ws"))
    path.write_text('{"images": []}')
    with pytest.raises(ValueError, match="no 'categories' list"):
        ingest("coco", path, Workspace(tmp_path / "ws"))
