"""The files of one training run and the rules between them (a workspace's ``models/``).

After every epoch, each write atomic: ``last.pt`` (:class:`RunState`, what a
resume continues), ``candidate.pt`` when validation mAP improved (the best
model so far, ``complete`` false), ``history.parquet``. When the last epoch is
done the candidate is marked complete and renamed over ``classifier.pt`` (what
the map stages load), so a killed or failing run leaves the previous finished
model in place. A fresh run first drops the previous run's ``last.pt`` and
``candidate.pt``; a resume first adopts the unfinished ``classifier.pt`` an
older version trained into. The file formats are :mod:`wsss_core.model.checkpoint`'s.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wsss_core.config import TrainConfig, switched_off
from wsss_core.data.manifest import Manifest
from wsss_core.model.checkpoint import (
    TRAINING_STATE_FORMAT,
    TrainingPaths,
    atomic_torch_save,
    check_class_names,
    cpu_state_dict,
    read_payload,
    save_checkpoint,
)
from wsss_core.model.classifier import Classifier
from wsss_core.model.history import EpochMetrics, write_history


@dataclass
class RunState:
    """Everything that changes while training; ``last.pt`` is this, serialised."""

    model: Classifier
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    history: list[EpochMetrics]
    best_epoch: int = 0
    best_map: float = -math.inf
    # image id -> its file and why it was left out (unreadable), over every call of the run
    skipped_images: dict[str, str] = field(default_factory=dict)


def requested_config(config: TrainConfig) -> dict[str, Any]:
    """The train config as given (before sizing): what a resume must be asked with again.

    Without the settings of an option that is off, as in the lineage: a run saved
    before the option existed stays resumable.
    """
    return config.model_dump(mode="json", exclude=switched_off("train", config))


def check_resumable(
    state: dict[str, Any], path: Path, manifest: Manifest, config: TrainConfig
) -> None:
    """A clear error unless ``state`` is a run of these classes, training images and config."""
    check_class_names(
        state["class_names"],
        manifest.class_names,
        path,
        "; the manifest changed since that run: train without --resume",
    )
    # A state without the hash predates it: its data cannot be vouched for.
    if state.get("training_data_hash") != manifest.training_hash:
        raise ValueError(
            f"{path}: the training images changed since that run (different images, labels "
            "or splits); train without --resume"
        )
    requested, stored = requested_config(config), state["requested_config"]
    if requested != stored:
        changed = sorted(
            k for k in set(requested) | set(stored) if requested.get(k) != stored.get(k)
        )
        raise ValueError(
            f"{path}: that run used a different train config (differs in: {', '.join(changed)}); "
            "resume with the same config or train without --resume"
        )


def save_training_state(
    path: Path,
    run: RunState,
    manifest: Manifest,
    config: TrainConfig,
    requested: dict[str, Any],
    lineage: dict[str, str],
) -> None:
    atomic_torch_save(
        {
            "format": TRAINING_STATE_FORMAT,
            "backbone": config.backbone,
            "class_names": list(manifest.class_names),
            "config": config.model_dump(mode="json"),
            "requested_config": requested,
            "lineage": dict(lineage),
            "training_data_hash": manifest.training_hash,
            "epoch": len(run.history),
            "epochs": config.epochs,
            "state_dict": cpu_state_dict(run.model),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "history": [metrics.as_dict() for metrics in run.history],
            "best_epoch": run.best_epoch,
            "best_map": run.best_map,
            "skipped_images": dict(run.skipped_images),
        },
        path,
    )


def restore_run(run: RunState, state: dict[str, Any]) -> None:
    """Put the ``last.pt`` payload ``state`` into ``run`` (built for the same config)."""
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.history = [EpochMetrics.from_dict(row) for row in state["history"]]
    run.best_epoch = int(state["best_epoch"])
    run.best_map = float(state["best_map"])
    # Every image any call of the run left out; states of older versions have no such key.
    run.skipped_images = {**state.get("skipped_images", {}), **run.skipped_images}


def best_metrics(run: RunState, config: TrainConfig, complete: bool) -> dict[str, Any]:
    """The ``metrics`` of the run's best model (``classifier.pt`` / ``candidate.pt``)."""
    best = run.history[run.best_epoch - 1]
    return {
        "epoch": best.epoch,
        "val_map": best.val_map,
        "per_class_ap": list(best.val_ap),
        "train_loss": best.train_loss,
        "epochs": config.epochs,
        "epochs_done": len(run.history),
        "complete": complete,
        "skipped_images": dict(run.skipped_images),
    }


def save_candidate(
    paths: TrainingPaths,
    run: RunState,
    manifest: Manifest,
    config: TrainConfig,
    lineage: dict[str, str],
) -> None:
    """The run's best model so far, not complete yet: ``candidate.pt``."""
    save_checkpoint(
        paths.candidate,
        run.model,
        manifest.class_names,
        config.model_dump(mode="json"),
        best_metrics(run, config, complete=False),
        lineage,
    )


def write_run_history(
    paths: TrainingPaths, run: RunState, manifest: Manifest, config: TrainConfig, complete: bool
) -> None:
    write_history(
        paths.history,
        run.history,
        manifest.class_names,
        config.model_dump(mode="json"),
        run.best_epoch,
        complete,
    )


def is_promoted(payload: dict[str, Any] | None, run: RunState) -> bool:
    """True when ``payload`` is this finished run's best model, marked complete."""
    metrics = (payload or {}).get("metrics", {})
    return (
        bool(metrics.get("complete"))
        and metrics.get("epoch") == run.best_epoch
        and metrics.get("epochs_done", len(run.history)) == len(run.history)
    )


def promote_candidate(paths: TrainingPaths, run: RunState, config: TrainConfig) -> None:
    """Mark the run's best model complete, then rename it over ``classifier.pt``.

    Each step is atomic and a repeat after a kill between them finishes the job,
    so ``classifier.pt`` is always the previous complete model or this one.
    """
    payload = read_payload(paths.candidate)
    if payload is None:
        if is_promoted(read_payload(paths.best), run):  # promoted by an earlier call
            return
        raise FileNotFoundError(
            f"{paths.candidate}: the best model of this training run is missing; "
            "train again without --resume"
        )
    if not payload["metrics"].get("complete"):
        payload["metrics"] = best_metrics(run, config, complete=True)
        atomic_torch_save(payload, paths.candidate)
    os.replace(paths.candidate, paths.best)


def discard_previous_run(paths: TrainingPaths) -> None:
    """A fresh run drops an earlier run's candidate and resume state.

    So ``candidate.pt`` and ``last.pt``, when both exist, belong to one run and a
    resume never promotes another run's model. ``last.pt`` first: a kill between
    the two leaves a candidate nothing resumes (the next fresh run drops it).
    """
    paths.last.unlink(missing_ok=True)
    paths.candidate.unlink(missing_ok=True)


def adopt_legacy_candidate(paths: TrainingPaths, state: dict[str, Any]) -> None:
    """Older versions kept an unfinished run's best model in ``classifier.pt``: move it.

    Only such a run can have left an incomplete ``classifier.pt``; resuming it
    then continues from its own best model, as it did then.
    """
    if paths.candidate.exists():
        return
    payload = read_payload(paths.best)
    if payload is None or payload.get("metrics", {}).get("complete", True):
        return
    if payload.get("lineage") == state.get("lineage"):
        os.replace(paths.best, paths.candidate)
