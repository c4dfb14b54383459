"""A retrain that is killed or fails never takes the finished classifier away from the maps.

Training keeps its best model so far in ``models/candidate.pt`` and renames it
over ``models/classifier.pt`` only when its last epoch is done.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_pipeline import NO_SELF_TRAINING, TINY_CAM, TINY_TRAIN

from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import read_manifest, write_manifest
from wsss_core.model import run_files, training
from wsss_core.model.checkpoint import file_hash, load_checkpoint
from wsss_core.model.reuse import TrainOutcome, train_or_reuse
from wsss_core.stages.cam_stage import run_cam_shard
from wsss_core.stages.common import checked_model_hash
from wsss_core.stages.evaluate_stage import evaluate_workspace
from wsss_core.stages.ingest_stage import ingest
from wsss_core.stages.status import workspace_status
from wsss_core.store.maps import read_lineage
from wsss_core.store.workspace import Workspace

# 16 images of 48 px; two epochs, so that a retrain can fail after one.
CONFIG = PipelineConfig.model_validate(
    {
        "device": "cpu",
        "demo": {"num_images": 16, "image_size": 48, "seed": 4},
        "train": {**TINY_TRAIN, "image_size": 48, "epochs": 2},
        "cam": TINY_CAM,
        "self_training": NO_SELF_TRAINING,
    }
)


def quiet(_: str) -> None:
    pass


def _train(workspace: Workspace, config: PipelineConfig, **options) -> TrainOutcome:
    return train_or_reuse(workspace, config, log=quiet, show_progress=False, **options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Workspace:
    """A demo workspace with a finished classifier, its maps stamped with it."""
    workspace = Workspace(tmp_path_factory.mktemp("retrain") / "ws")
    ingest("demo", None, workspace, demo=CONFIG.demo)
    _train(workspace, CONFIG)
    return workspace


@pytest.fixture
def unchanged(trained: Workspace, tmp_path: Path) -> Workspace:
    # Lineages are content hashes and image uris absolute, so a copy is as current.
    shutil.copytree(trained.root, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


@pytest.fixture
def workspace(unchanged: Workspace) -> Workspace:
    """A copy of ``trained`` whose labelled training images changed since (a retrain is due)."""
    copy = unchanged
    manifest = read_manifest(copy)
    rows = list(manifest.all_rows)
    first = next(i for i, row in enumerate(rows) if row.split == "train" and row.labels)
    relabelled = tuple(sorted({*rows[first].labels, (rows[first].labels[0] + 1) % 10}))
    rows[first] = replace(rows[first], labels=relabelled)
    write_manifest(copy, rows, manifest.class_names, manifest.source)
    return copy


def _fail_from_epoch(monkeypatch: pytest.MonkeyPatch, failing_epoch: int) -> None:
    """Make every training epoch from ``failing_epoch`` on raise, as a NaN loss does."""
    real = training._train_one_epoch

    def train_one_epoch(run, loader, device, use_amp, epoch, *rest):
        if epoch >= failing_epoch:
            raise FloatingPointError(f"training loss became nan at epoch {epoch}, batch 1")
        return real(run, loader, device, use_amp, epoch, *rest)

    monkeypatch.setattr(training, "_train_one_epoch", train_one_epoch)


def _failed_retrain(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The weekly retrain on the changed images: epoch 1 done, epoch 2 hits a NaN loss."""
    _fail_from_epoch(monkeypatch, 2)
    with pytest.raises(FloatingPointError):
        _train(workspace, CONFIG)


def test_a_failed_retrain_leaves_the_finished_model_in_use(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
):
    before = workspace.model_path.read_bytes()
    _failed_retrain(workspace, monkeypatch)
    assert workspace.model_path.read_bytes() == before
    assert not load_checkpoint(workspace.candidate_model_path).complete

    # The nightly run keeps the finished model and says that a retrain is pending.
    messages: list[str] = []
    nightly = train_or_reuse(
        workspace, CONFIG, log=messages.append, show_progress=False, keep_current=True
    )
    assert not nightly.trained and nightly.data_changed
    assert nightly.model_hash == file_hash(workspace.model_path)
    assert any("unfinished training run" in m and "candidate.pt" in m for m in messages)

    # The map stages accept it and stamp their maps with it.
    model_hash = checked_model_hash(workspace)
    assert model_hash == nightly.model_hash
    assert run_cam_shard(workspace, CONFIG, 0).computed
    assert read_lineage(workspace.shard_path("cam", 0)).model_hash == model_hash

    status = workspace_status(workspace, CONFIG)
    assert status.model.kept_by_runs and status.model.unfinished is not None
    assert status.lines()[2] == (
        "  unfinished training run: models/candidate.pt (best epoch 1 of 2); it replaces "
        "the classifier only once finished: `wsss train --resume`"
    )
    # Once the train config or data moved on, `--resume` would refuse: status says so.
    moved_on = CONFIG.model_copy(update={"train": CONFIG.train.model_copy(update={"seed": 9})})
    stale = workspace_status(workspace, moved_on).model.unfinished
    assert stale is not None and not stale.resumable
    assert "the next retrain starts over and drops it" in stale.describe("candidate.pt")

    # The next retrain resumes the run and fails the same way: still nothing lost.
    with pytest.raises(FloatingPointError, match="epoch 2"):
        _train(workspace, CONFIG)
    assert workspace.model_path.read_bytes() == before


def test_finishing_the_retrain_replaces_the_model(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
):
    before = workspace.model_path.read_bytes()
    _failed_retrain(workspace, monkeypatch)
    monkeypatch.undo()  # the cause is fixed

    finished = _train(workspace, CONFIG, resume=True)
    assert finished.trained and finished.resumed_from == 1 and finished.epochs == 2
    assert workspace.model_path.read_bytes() != before
    assert not workspace.candidate_model_path.exists()
    model = load_checkpoint(workspace.model_path)
    assert model.complete and model.lineage["training_data_hash"] == (
        read_manifest(workspace).training_hash
    )
    assert checked_model_hash(workspace) == finished.model_hash
    status = workspace_status(workspace, CONFIG)
    assert status.model.up_to_date and status.model.unfinished is None


def test_a_kill_before_the_promotion_is_finished_by_the_next_training(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
):
    """Killed after the last epoch, before its candidate replaced classifier.pt."""
    before = workspace.model_path.read_bytes()

    def killed(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_files, "promote_candidate", killed)
    with pytest.raises(KeyboardInterrupt):
        _train(workspace, CONFIG)
    assert workspace.model_path.read_bytes() == before
    monkeypatch.undo()

    finished = _train(workspace, CONFIG)  # all epochs done: only the promotion is left
    assert finished.trained and finished.resumed_from == finished.epochs == 2
    assert load_checkpoint(workspace.model_path).complete
    assert workspace.model_path.read_bytes() != before
    assert not workspace.candidate_model_path.exists()


def _mark_unfinished(path: Path) -> None:
    """What older versions left in classifier.pt while (or after being killed) training."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["metrics"]["complete"] = False
    torch.save(payload, path)


def test_an_unfinished_classifier_is_refused_with_a_clear_error(workspace: Workspace):
    _mark_unfinished(workspace.model_path)
    for check in (checked_model_hash, lambda ws: evaluate_workspace(ws, CONFIG)):
        with pytest.raises(ValueError) as error:
            check(workspace)
        message = str(error.value)
        assert len(message.splitlines()) == 1
        assert str(workspace.model_path) in message and "unfinished training run" in message
        assert "wsss train --resume" in message
    status = workspace_status(workspace, CONFIG)
    assert not status.model.kept_by_runs
    assert "its training run is unfinished" in status.lines()[1]


def test_an_unfinished_classifier_of_an_older_version_is_finished_by_resuming(
    unchanged: Workspace,
):
    """Older versions trained into classifier.pt: a resume takes it as its candidate."""
    _train(unchanged, CONFIG, force=True, stop_after_epoch=1)
    os.replace(unchanged.candidate_model_path, unchanged.model_path)  # the old layout
    with pytest.raises(ValueError, match="unfinished training run"):
        checked_model_hash(unchanged)

    resumed = _train(unchanged, CONFIG, keep_current=True)  # not reused as if finished
    assert resumed.trained and resumed.resumed_from == 1
    assert load_checkpoint(unchanged.model_path).complete
    assert not unchanged.candidate_model_path.exists()
    assert checked_model_hash(unchanged) == resumed.model_hash
