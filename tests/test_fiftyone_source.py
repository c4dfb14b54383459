"""An existing FiftyOne dataset as a source: Classifications as labels, Segmentation as truth."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_core.config import ReviewConfig
from wsss_core.data.images import load_label_map
from wsss_core.data.manifest import read_manifest, read_quarantine
from wsss_core.data.sources import IngestOptions
from wsss_core.review.fiftyone_adapter import configure_database
from wsss_core.stages.ingest_stage import ingest
from wsss_core.store.workspace import Workspace


@pytest.fixture
def dataset(tmp_path: Path, fiftyone_database_dir: Path):
    review = ReviewConfig(database_dir=str(fiftyone_database_dir))
    workspace = Workspace(tmp_path / "ws")
    configure_database(workspace, review)
    import fiftyone as fo

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 6), (10, 20, 30)).save(images / f"{name}.png")
    mask_file = tmp_path / "a_mask.png"
    on_disk = np.zeros((6, 8), np.uint8)
    on_disk[:, 4:] = 7  # 7 = "dog" in the dataset's own numbering
    Image.fromarray(on_disk).save(mask_file)

    name = f"wsss-test-source-{uuid.uuid4().hex[:8]}"
    data = fo.Dataset(name)
    data.mask_targets = {"truth": {0: "background", 7: "dog", 9: "cat", 3: "lamp"}}

    def labels(*names):
        return fo.Classifications(classifications=[fo.Classification(label=n) for n in names])

    in_db = np.full((6, 8), 9, np.uint8)
    in_db[0, 0] = 3  # a target that is not one of our classes: ignore
    data.add_samples(
        [
            fo.Sample(
                filepath=str(images / "a.png"),
                split="train",
                tags=[],
                ml=labels("dog"),
                truth=fo.Segmentation(mask_path=str(mask_file)),
            ),
            fo.Sample(
                filepath=str(images / "b.png"),
                split="val",
                ml=labels("cat", "cat"),
                truth=fo.Segmentation(mask=in_db),
            ),
            fo.Sample(filepath=str(images / "c.png"), tags=["val"], ml=labels()),
            fo.Sample(filepath=str(tmp_path / "gone.png"), ml=labels("dog")),
        ]
    )
    yield name, workspace, review
    fo.delete_dataset(name)


def test_classifications_and_segmentations_are_ingested(dataset):
    name, workspace, review = dataset
    options = IngestOptions(labels_field="ml", gt_field="truth")
    summary = ingest("fiftyone", name, workspace, options, review=review)
    manifest = read_manifest(workspace)
    assert manifest.class_names == ("cat", "dog")
    assert manifest.source["dataset"] == name
    rows = manifest.by_id()
    assert rows["a"].labels == (1,) and rows["a"].split == "train"
    assert rows["b"].labels == (0,) and rows["b"].split == "val"
    assert rows["c"].status == "unlabeled" and rows["c"].split == "val"  # split from its tag
    a, b = load_label_map(rows["a"].gt_uri), load_label_map(rows["b"].gt_uri)
    assert set(np.unique(a)) == {0, 2} and a[0, 7] == 2  # dog -> class 1 -> value 2
    assert b[0, 0] == 255 and b[1, 1] == 1  # lamp -> ignore, cat -> value 1
    reasons = {q.image_id: q.reason for q in read_quarantine(workspace)}
    assert reasons["gone"].startswith("missing file") and "gone.png" in reasons["gone"]
    assert summary.ingested == 3


def test_a_field_that_is_not_classifications_is_a_clear_error(dataset):
    name, workspace, review = dataset
    with pytest.raises(ValueError, match=r"'truth'.*not Classifications"):
        ingest("fiftyone", name, workspace, IngestOptions(labels_field="truth"), review=review)
    with pytest.raises(FileNotFoundError, match="no FiftyOne dataset"):
        ingest("fiftyone", "no-such-dataset-x", workspace, review=review)
