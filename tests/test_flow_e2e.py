"""The whole flow on a tiny demo workspace, on a real Prefect server, MongoDB and Parquet."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from tiny_pipeline import TINY_SECTIONS

from wsss_core.data.images import load_label_map
from wsss_core.data.manifest import read_manifest
from wsss_core.store.maps import read_cam_shard, read_label_shard
from wsss_core.store.parquet_io import read_metadata
from wsss_core.store.workspace import MAP_STAGES, Workspace

# Unique per test process: two suites running at once must not share a dataset.
DATASET = f"wsss-e2e-test-{os.getpid()}"

TINY_CONFIG = {
    "shard_size": 10,
    "demo": {"num_images": 24, "image_size": 64, "seed": 3},
    **TINY_SECTIONS,
}


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, prefect_harness, fiftyone_database_dir):
    from flows.pseudo_label import pseudo_label

    root = tmp_path_factory.mktemp("e2e")
    config = {
        **TINY_CONFIG,
        "review": {"database_dir": str(fiftyone_database_dir), "dataset_name": DATASET},
    }
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    workspace = root / "workspace"
    result = pseudo_label(workspace=str(workspace), config_file=str(config_path), demo=True)
    return Workspace(workspace), config_path, result


def test_manifest_lists_every_demo_image(pipeline_run):
    workspace, _, _ = pipeline_run
    manifest = read_manifest(workspace)
    assert len(manifest) == 24
    assert manifest.class_names == tuple(f"digit_{d}" for d in range(10))
    assert {r.split for r in manifest.records} == {"train", "val"}
    assert all(r.gt_uri and Path(r.gt_uri).is_file() for r in manifest.records)


def test_every_stage_writes_all_shards_with_lineage(pipeline_run):
    workspace, _, _ = pipeline_run
    manifest = read_manifest(workspace)
    for stage in MAP_STAGES:
        paths = sorted(workspace.maps_dir(stage).glob("part-*.parquet"))
        assert len(paths) == 3, stage  # 24 images, 10 per shard
        rows = sum(pq.read_metadata(p).num_rows for p in paths)
        assert rows == len(manifest), stage
        metadata = read_metadata(paths[0])
        assert metadata["stage"] == stage
        assert {"config_hash", "model_hash", "source_hash", "schema_version"} <= set(metadata)


def test_stage_maps_are_consistent_with_the_labels(pipeline_run):
    workspace, _, _ = pipeline_run
    records = read_manifest(workspace).by_id()
    cams = list(read_cam_shard(workspace.shard_path("cam", 0)))
    crf = {r.image_id: r for r in read_label_shard(workspace.shard_path("crf", 0))}
    for cam in cams:
        record = records[cam.image_id]
        assert cam.class_ids == record.labels
        assert cam.cams.shape == (len(record.labels), record.height, record.width)
        assert cam.cams.min() >= 0 and cam.cams.max() <= 1.0 + 1e-3
        mask = crf[cam.image_id].labels
        allowed = {0, 255, *(c + 1 for c in record.labels)}
        assert set(np.unique(mask).tolist()) <= allowed
        assert crf[cam.image_id].confidence is not None
        png = load_label_map(workspace.mask_path(cam.image_id))
        np.testing.assert_array_equal(png, mask)


def test_evaluation_scores_every_stage(pipeline_run):
    workspace, _, result = pipeline_run
    assert result.evaluation is not None
    assert [s.stage for s in result.evaluation.scores] == ["cam", "seeds", "grown", "crf"]
    for score in result.evaluation.scores:
        assert 0.0 <= score.miou <= 1.0
    assert workspace.evaluation_path.exists()
    assert 0.0 <= result.val_map <= 1.0


def test_fiftyone_dataset_holds_samples_with_masks(pipeline_run):
    from wsss_core.review.fiftyone_adapter import published_samples

    workspace, config_path, result = pipeline_run
    from wsss_core.config import load_config

    samples = published_samples(workspace, load_config(str(config_path)).review)
    assert result.dataset_name == DATASET
    assert len(samples) == 24
    for sample in samples:
        assert Path(sample["pseudo_mask"]).is_file()
        assert Path(sample["ground_truth"]).is_file()


def test_rerun_recomputes_nothing(pipeline_run):
    from flows.pseudo_label import pseudo_label

    workspace, config_path, _ = pipeline_run
    again = pseudo_label(workspace=str(workspace.root), config_file=str(config_path), publish=False)
    assert again.trained is False
    assert again.computed_shards == {"cam": 0, "seeds": 0, "grown": 0, "crf": 0}


def test_run_report_has_tables_and_figures(pipeline_run):
    _, _, result = pipeline_run
    report = Path(result.report_path)
    text = report.read_text()
    assert "| crf |" in text and "mIoU" in text
    for figure in ("overlays.png", "iou_per_class.png"):
        path = report.parent / figure
        assert path.stat().st_size > 1000
        assert f"({figure})" in text
