"""Export leaves out maps a run would not keep: other config, other model, other inputs.

Tiny hand-written workspaces (a 4-image folder, a stand-in checkpoint file,
map shards written with chosen lineages): no training, no stage runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from folder_ingest import ingest_folder
from PIL import Image

from wsss_core.config import PipelineConfig
from wsss_core.data.images import load_label_map, save_label_map, voc_palette
from wsss_core.data.manifest import ImageRecord, read_manifest
from wsss_core.export.voc import export_voc
from wsss_core.review.reviews import ObservedReview, published_mask_path, record_reviews
from wsss_core.stages.common import current_model_hash, expected_lineage, input_hashes
from wsss_core.store.maps import CamRecord, LabelRecord, write_cam_shard, write_label_shard
from wsss_core.store.workspace import Workspace

CONFIG = PipelineConfig()
OTHER_CONFIG = CONFIG.model_copy(update={"crf": CONFIG.crf.model_copy(update={"iterations": 3})})
MODEL = b"stand-in checkpoint"  # its file hash is all the lineage looks at


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """Images a-d (labels cat, dog, cat, dog) ingested, and a classifier file."""
    root, workspace = tmp_path / "data", Workspace(tmp_path / "ws")
    (root / "images").mkdir(parents=True)
    labels = {"a": "cat", "b": "dog", "c": "cat", "d": "dog"}
    for value, image_id in enumerate(labels):
        Image.new("RGB", (12, 8), (value, 50, 50)).save(root / "images" / f"{image_id}.png")
    rows = "".join(f"{image_id},{names}\n" for image_id, names in labels.items())
    (root / "labels.csv").write_text("image_id,labels\n" + rows)
    ingest_folder(root / "images", root / "labels.csv", workspace)
    workspace.model_path.parent.mkdir(parents=True, exist_ok=True)
    workspace.model_path.write_bytes(MODEL)
    return workspace


def _records(workspace: Workspace, ids: str) -> list[ImageRecord]:
    return [r for r in read_manifest(workspace).records if r.image_id in ids]


def _write_crf(
    workspace: Workspace, index: int, ids: str, config: PipelineConfig, model: str
) -> None:
    """A crf shard of ``ids``, every pixel labelled with the image's first class."""
    records = _records(workspace, ids)
    maps = [
        LabelRecord(r.image_id, np.full((r.height, r.width), r.labels[0] + 1, np.uint8), None)
        for r in records
    ]
    lineage = expected_lineage(config, "crf", model, records)
    path = workspace.shard_path("crf", index)
    write_label_shard(path, "crf", maps, lineage, input_hashes(records))


def _write_cam(workspace: Workspace, ids: str, config: PipelineConfig) -> None:
    records = _records(workspace, ids)
    cams = [
        CamRecord(r.image_id, r.labels, np.full((1, r.height, r.width), 0.5, np.float32), None)
        for r in records
    ]
    lineage = expected_lineage(config, "cam", current_model_hash(workspace), records)
    write_cam_shard(workspace.shard_path("cam", 0), cams, lineage, inputs=input_hashes(records))


def _exported(out: Path) -> set[str]:
    return {p.stem for p in (out / "SegmentationClass").glob("*.png")}


@pytest.mark.parametrize("made_with", ["another config", "another model"])
def test_a_shard_made_with_another_config_or_model_is_outdated(workspace, tmp_path, made_with):
    """After a retrain or a config change whose crf shard failed: old masks stay out."""
    current = current_model_hash(workspace)
    _write_crf(workspace, 0, "ab", CONFIG, current)
    if made_with == "another config":
        _write_crf(workspace, 1, "cd", OTHER_CONFIG, current)
    else:
        _write_crf(workspace, 1, "cd", CONFIG, "0" * 16)
    summary = export_voc(workspace, CONFIG, tmp_path / "out")
    assert _exported(tmp_path / "out") == {"a", "b"}
    assert (summary.exported, summary.outdated, summary.missing) == (2, 2, 0)


def test_the_cli_says_why_maps_are_outdated(workspace, tmp_path, capsys):
    from wsss_cli.main import main

    _write_crf(workspace, 0, "abcd", OTHER_CONFIG, current_model_hash(workspace))
    args = ["export", "--workspace", str(workspace.root), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "exported 0 mask(s)" in printed and "4 outdated" in printed
    assert "another config or model" in printed


def test_without_a_classifier_no_map_is_current(workspace, tmp_path):
    _write_crf(workspace, 0, "abcd", CONFIG, current_model_hash(workspace))
    workspace.model_path.unlink()
    summary = export_voc(workspace, CONFIG, tmp_path / "out")
    assert (summary.exported, summary.outdated) == (0, 4)


def test_an_approved_mask_is_exported_whatever_its_shard_lineage(workspace, tmp_path):
    """An approval freezes the mask the reviewer saw: a later retrain does not withdraw it."""
    frozen = np.full((8, 12), 255, np.uint8)
    save_label_map(published_mask_path(workspace, "c"), frozen, voc_palette())
    approval = ObservedReview(frozenset({"approved"}), _records(workspace, "c")[0].labels)
    record_reviews(workspace, {"c": approval})
    _write_crf(workspace, 0, "abcd", CONFIG, "0" * 16)  # then the model changed
    summary = export_voc(workspace, CONFIG, tmp_path / "out")
    assert _exported(tmp_path / "out") == {"c"}
    assert (summary.exported, summary.outdated) == (1, 3)
    np.testing.assert_array_equal(load_label_map(tmp_path / "out/SegmentationClass/c.png"), frozen)


def test_cam_threshold_is_not_lineage_but_cam_settings_are(workspace, tmp_path):
    _write_cam(workspace, "abcd", CONFIG)
    threshold = CONFIG.model_copy(update={"cam": CONFIG.cam.model_copy(update={"threshold": 0.6})})
    kept = export_voc(workspace, threshold, tmp_path / "kept", stage="cam")
    assert (kept.exported, kept.outdated) == (4, 0)
    scales = CONFIG.model_copy(update={"cam": CONFIG.cam.model_copy(update={"scales": (2.0,)})})
    dropped = export_voc(workspace, scales, tmp_path / "dropped", stage="cam")
    assert (dropped.exported, dropped.outdated) == (0, 4)
