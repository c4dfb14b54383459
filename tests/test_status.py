"""`wsss status`: per stage, done and pending images agree with what a run would compute."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from tiny_pipeline import TINY_SECTIONS

from wsss_cli.main import main
from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import (
    STATUS_REMOVED,
    STATUS_UNLABELED,
    QuarantinedItem,
    read_manifest,
    write_manifest,
    write_quarantine,
)
from wsss_core.stages.status import WorkspaceStatus, workspace_status
from wsss_core.store.workspace import MAP_STAGES, Workspace

# 24 images in shards of 10, 10 and 4; one epoch of a small resnet18 from scratch.
TINY = {
    "device": "cpu",
    "shard_size": 10,
    "demo": {"num_images": 24, "image_size": 64, "seed": 3},
    **TINY_SECTIONS,
}
CONFIG = PipelineConfig.model_validate(TINY)
SHARD_IMAGES = (10, 10, 4)


def _run_stages(workspace: Workspace, config: PipelineConfig, stages: tuple[str, ...]) -> None:
    from wsss_core.stages.cam_stage import run_cam_shard
    from wsss_core.stages.crf_stage import run_crf_shard
    from wsss_core.stages.grow_stage import run_grow_shard
    from wsss_core.stages.seeds_stage import run_seeds_shard

    runners = {
        "cam": run_cam_shard,
        "seeds": run_seeds_shard,
        "grown": run_grow_shard,
        "crf": run_crf_shard,
    }
    for stage in stages:
        for index in range(len(SHARD_IMAGES)):
            runners[stage](workspace, config, index)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Workspace:
    """An ingested demo workspace with a trained classifier and no maps yet."""
    from wsss_core.model.reuse import train_or_reuse
    from wsss_core.stages.ingest_stage import ingest

    workspace = Workspace(tmp_path_factory.mktemp("status") / "trained")
    ingest("demo", None, workspace, demo=CONFIG.demo)
    train_or_reuse(workspace, CONFIG, log=lambda _: None, show_progress=False)
    return workspace


@pytest.fixture(scope="module")
def complete(trained: Workspace, tmp_path_factory) -> Workspace:
    """A copy of ``trained`` with every map stage run."""
    workspace = _copy(trained, tmp_path_factory.mktemp("status") / "complete")
    _run_stages(workspace, CONFIG, MAP_STAGES)
    return workspace


def _copy(workspace: Workspace, destination: Path) -> Workspace:
    # Lineages are content hashes and image uris absolute, so a copy is as current.
    shutil.copytree(workspace.root, destination)
    return Workspace(destination)


def _counts(status: WorkspaceStatus) -> dict[str, tuple[int, int, int]]:
    """(done, stale, missing) images per stage."""
    return {s.stage: (s.done, s.stale, s.missing) for s in status.stages}


def _pending_shards(status: WorkspaceStatus) -> dict[str, tuple[int, ...]]:
    return {s.stage: s.pending_shards for s in status.stages}


def test_before_any_stage_every_image_is_missing(trained: Workspace):
    status = workspace_status(trained, CONFIG)
    assert status.images.usable == 24
    assert status.model.exists and status.model.up_to_date
    assert status.model.val_map is not None
    assert _counts(status) == dict.fromkeys(MAP_STAGES, (0, 0, 24))
    assert [s.images for s in status.stage("cam").shards] == list(SHARD_IMAGES)


def test_after_cam_and_seeds_only_grown_and_crf_are_pending(trained: Workspace, tmp_path: Path):
    workspace = _copy(trained, tmp_path / "ws")
    _run_stages(workspace, CONFIG, ("cam", "seeds"))
    counts = _counts(workspace_status(workspace, CONFIG))
    assert counts == {
        "cam": (24, 0, 0),
        "seeds": (24, 0, 0),
        "grown": (0, 0, 24),
        "crf": (0, 0, 24),
    }


def test_after_every_stage_nothing_is_pending(complete: Workspace):
    status = workspace_status(complete, CONFIG)
    assert _counts(status) == dict.fromkeys(MAP_STAGES, (24, 0, 0))
    assert _pending_shards(status) == dict.fromkeys(MAP_STAGES, ())


def test_a_changed_crf_parameter_makes_only_crf_stale(complete: Workspace):
    config = CONFIG.model_copy(update={"crf": CONFIG.crf.model_copy(update={"iterations": 3})})
    counts = _counts(workspace_status(complete, config))
    assert counts == {**dict.fromkeys(("cam", "seeds", "grown"), (24, 0, 0)), "crf": (0, 24, 0)}


@pytest.mark.parametrize(
    ("field", "value", "stale_stages"),
    [
        ("threshold", 0.3, ()),  # read by evaluation and export only
        ("cpu_threads", 2, MAP_STAGES),  # changes the CAMs' last bits
    ],
)
def test_a_changed_cam_setting_outdates_only_the_maps_it_shapes(
    complete: Workspace, field: str, value: object, stale_stages: tuple[str, ...]
):
    config = CONFIG.model_copy(update={"cam": CONFIG.cam.model_copy(update={field: value})})
    counts = _counts(workspace_status(complete, config))
    assert counts == {
        stage: (0, 24, 0) if stage in stale_stages else (24, 0, 0) for stage in MAP_STAGES
    }


def test_a_changed_train_config_outdates_the_classifier(complete: Workspace):
    config = CONFIG.model_copy(update={"train": CONFIG.train.model_copy(update={"seed": 1})})
    status = workspace_status(complete, config)
    assert not status.model.config_current and not status.model.up_to_date
    assert _counts(status) == dict.fromkeys(MAP_STAGES, (0, 24, 0))  # train is upstream of all
    assert "trained with another train config" in "\n".join(status.lines())


def test_an_added_image_is_the_only_pending_image(complete: Workspace, tmp_path: Path):
    workspace = _copy(complete, tmp_path / "ws")
    manifest = read_manifest(workspace)
    # A test-split image: the classifier's training data, hence the classifier, stay current.
    extra = replace(manifest.all_rows[0], image_id="extra", split="test")
    write_manifest(workspace, [*manifest.all_rows, extra], manifest.class_names, manifest.source)
    status = workspace_status(workspace, CONFIG)
    assert status.model.up_to_date
    assert status.images.usable == 25
    # Its shard is rewritten, but the shard's other four images keep their rows.
    assert _counts(status) == dict.fromkeys(MAP_STAGES, (24, 1, 0))
    assert _pending_shards(status) == dict.fromkeys(MAP_STAGES, (2,))


def test_a_deleted_shard_file_is_missing_and_nothing_else(complete: Workspace, tmp_path: Path):
    workspace = _copy(complete, tmp_path / "ws")
    workspace.shard_path("seeds", 1).unlink()
    status = workspace_status(workspace, CONFIG)
    assert _counts(status) == {**dict.fromkeys(MAP_STAGES, (24, 0, 0)), "seeds": (14, 0, 10)}
    assert _pending_shards(status)["seeds"] == (1,)
    assert "seeds pending shards: 1" in status.lines(shards=True)


def test_a_deleted_mask_png_comes_back_from_its_current_crf_shard(
    complete: Workspace, tmp_path: Path
):
    from wsss_core.data.images import load_label_map
    from wsss_core.stages.crf_stage import run_crf_shard
    from wsss_core.store.maps import read_label_shard

    workspace = _copy(complete, tmp_path / "ws")
    row = next(iter(read_label_shard(workspace.shard_path("crf", 1))))
    workspace.mask_path(row.image_id).unlink()
    outcome = run_crf_shard(workspace, CONFIG, 1)
    assert not outcome.computed  # the shard is current: the CRF does not run again
    np.testing.assert_array_equal(load_label_map(workspace.mask_path(row.image_id)), row.labels)


def test_an_old_cam_shard_without_class_scores_is_stale_as_the_stage_sees_it(
    complete: Workspace, tmp_path: Path
):
    from wsss_core.stages.cam_stage import run_cam_shard

    workspace = _copy(complete, tmp_path / "ws")
    path = workspace.shard_path("cam", 0)
    pq.write_table(pq.read_table(path).drop_columns(["class_scores"]), path)  # lineage kept
    status = workspace_status(workspace, CONFIG)
    assert _counts(status) == {**dict.fromkeys(MAP_STAGES, (24, 0, 0)), "cam": (14, 10, 0)}
    assert run_cam_shard(workspace, CONFIG, 0).computed  # the run agrees: it recomputes it
    assert workspace_status(workspace, CONFIG).stage("cam").pending == 0


def test_without_a_model_every_existing_map_is_stale(complete: Workspace, tmp_path: Path):
    workspace = _copy(complete, tmp_path / "ws")
    workspace.model_path.unlink()
    status = workspace_status(workspace, CONFIG)
    assert not status.model.exists
    assert _counts(status) == dict.fromkeys(MAP_STAGES, (0, 24, 0))
    assert "none yet" in status.lines()[1]


def test_an_unreadable_checkpoint_is_reported_in_one_line(trained: Workspace, tmp_path: Path):
    workspace = _copy(trained, tmp_path / "ws")
    workspace.model_path.write_bytes(b"not a checkpoint")
    status = workspace_status(workspace, CONFIG)
    assert status.model.exists and status.model.error and not status.model.up_to_date
    assert _counts(status) == dict.fromkeys(MAP_STAGES, (0, 0, 24))
    assert "unreadable checkpoint" in status.lines()[1]


def test_image_counts_include_removed_unlabeled_and_quarantined(trained: Workspace, tmp_path: Path):
    workspace = _copy(trained, tmp_path / "ws")
    manifest = read_manifest(workspace)
    rows = list(manifest.all_rows)
    rows[0] = replace(rows[0], status=STATUS_REMOVED)
    rows[1] = replace(rows[1], labels=(), status=STATUS_UNLABELED)
    write_manifest(workspace, rows, manifest.class_names, manifest.source)
    write_quarantine(workspace, [QuarantinedItem(f"bad{i}", "", "missing file: x") for i in (1, 2)])
    status = workspace_status(workspace, CONFIG)
    assert status.images.usable == 23 and status.images.unlabeled == 1
    assert status.images.removed == 1 and status.images.quarantined == 2
    assert [s.images for s in status.stage("crf").shards] == [9, 10, 4]  # rows keep their shard
    assert status.lines()[0] == "images: 23 usable (1 unlabeled), 1 removed, 2 quarantined"


def test_the_table_is_aligned(complete: Workspace):
    table = workspace_status(complete, CONFIG).table()
    assert table[0].split() == ["stage", "done", "pending", "(stale", "missing)"]
    assert [line.split()[0] for line in table[1:]] == list(MAP_STAGES)
    assert table[1].split()[1:] == ["24", "0", "0", "0"]
    assert len({len(line) for line in table[1:]}) == 1  # numbers right-aligned in columns
    assert len(table[0]) == len(table[1]) + 1  # only the closing parenthesis hangs over


def test_cli_status_prints_the_report(complete: Workspace, tmp_path: Path, capsys):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(TINY))
    code = main(["status", "--workspace", str(complete.root), "--config", str(config_file)])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "images: 24 usable (0 unlabeled), 0 removed, 0 quarantined"
    assert out[1].startswith("classifier: models/classifier.pt, validation mAP ")
    assert out[1].endswith("up to date with the train config")
    assert out[3].split() == ["cam", "24", "0", "0", "0"]


def test_cli_status_without_manifest_is_a_one_line_error(tmp_path: Path, capsys):
    code = main(["status", "--workspace", str(tmp_path / "nothing-here")])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("wsss status: error:") and "ingest data first" in err[0]


def test_a_new_class_means_a_run_retrains_and_status_says_so(complete: Workspace, tmp_path: Path):
    from wsss_core.model.reuse import train_or_reuse

    workspace = _copy(complete, tmp_path / "ws")
    manifest = read_manifest(workspace)
    write_manifest(workspace, manifest.all_rows, [*manifest.class_names, "zebra"], manifest.source)
    status = workspace_status(workspace, CONFIG)
    assert not status.model.kept_by_runs and not status.model.up_to_date
    text = "\n".join(status.lines())
    assert "trained on another class list" in text
    assert "a run that retrains it makes every map below stale" in text
    outcome = train_or_reuse(
        workspace, CONFIG, log=lambda _: None, show_progress=False, keep_current=True
    )
    assert outcome.trained  # what status predicted
