"""Train only when needed: a finished checkpoint made from the same data and config is reused.

Decision order for a workspace (``models/``):

1. ``force``: train from scratch.
2. ``resume=True``: continue ``last.pt`` (a clear error when there is none or
   it belongs to other classes, data or config).
3. ``classifier.pt`` finished with the same lineage (train config hash +
   training data hash, :attr:`Manifest.training_hash`): reuse it.
   A classifier.pt that is not ``complete`` (written by older versions while
   training) is never reused: it is finished by resuming (step 4) or replaced.
3b. ``keep_current=True`` (what scheduled pipeline runs use): a finished
   ``classifier.pt`` with the same train config and classes is reused even
   though labelled training images were added or changed since, so new images
   only cost their own maps. Retraining on them is then an explicit choice.
4. ``resume=None`` (the default) and ``last.pt`` is an unfinished run with the
   same lineage: continue it, since its result is the one a fresh run would give.
5. Otherwise train from scratch.

A run's best model so far is ``candidate.pt``; ``classifier.pt`` changes only
when a run finishes. So a retrain that was killed or failed (a NaN loss) leaves
the previous model in use: steps 3 and 3b still reuse it, saying that an
unfinished run waits, and a pipeline run is never blocked by a retrain that
fails again on every resume. Finishing it is an explicit step 2 or 4
(``wsss train``, ``wsss run --retrain``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from wsss_core.config import PipelineConfig, stage_config_hash
from wsss_core.data.manifest import Manifest, read_manifest
from wsss_core.model.checkpoint import (
    TRAINING_STATE_FORMAT,
    LoadedClassifier,
    TrainingPaths,
    check_class_names,
    load_checkpoint,
    read_payload,
)
from wsss_core.model.training import train_classifier
from wsss_core.store.workspace import Workspace


@dataclass(frozen=True)
class TrainOutcome:
    trained: bool  # False: an up-to-date checkpoint was reused
    val_map: float  # validation mAP of the best epoch
    model_hash: str
    seconds: float = 0.0
    best_epoch: int = 0
    epochs: int = 0
    resumed_from: int = 0  # epochs finished before this call (0: fresh run)
    class_names: tuple[str, ...] = ()
    data_changed: bool = False  # reused although the training images changed since
    per_class_ap: tuple[float, ...] = ()
    image_size: int = 0
    backbone: str = ""
    models_dir: str = ""


def _tqdm_progress(total: int, description: str) -> tqdm:
    return tqdm(total=total, desc=description, unit="batch", leave=False, dynamic_ncols=True)


def _unfinished_run_matches(paths: TrainingPaths, lineage: dict[str, str]) -> bool:
    state = read_payload(paths.last)  # an unreadable leftover is simply not resumable
    if state is None or state.get("format") != TRAINING_STATE_FORMAT:
        return False
    epochs_left = int(state.get("epoch", 0)) < int(state.get("epochs", 0))
    # All epochs done but the candidate still there: killed before promoting it.
    return state.get("lineage") == lineage and (epochs_left or paths.candidate.exists())


@dataclass(frozen=True)
class UnfinishedRun:
    """A killed or failed training run's best model so far (``models/candidate.pt``)."""

    path: Path
    best_epoch: int
    epochs: int
    resumable: bool  # made for today's train config and data: `--resume` can finish it

    def describe(self, name: str | Path) -> str:
        """What it is and what to do about it, naming the file as the caller likes."""
        what = f"{name} (best epoch {self.best_epoch} of {self.epochs})"
        if self.resumable:
            return f"{what}; it replaces the classifier only once finished: `wsss train --resume`"
        return (
            f"{what}, for another train config or training data than now; the next "
            "retrain starts over and drops it"
        )


def unfinished_run(candidate: Path, lineage: dict[str, str]) -> UnfinishedRun | None:
    """The candidate left by an unfinished training run; None when there is none.

    ``lineage``: today's :func:`training_lineage`, to tell whether it can still
    be resumed (images added since, for one, make the resume refuse).
    """
    payload = read_payload(candidate)
    if payload is None:
        return None
    metrics = payload.get("metrics", {})
    return UnfinishedRun(
        candidate,
        int(metrics.get("epoch", 0)),
        int(metrics.get("epochs", 0)),
        resumable=payload.get("lineage") == lineage,
    )


def training_lineage(config: PipelineConfig, manifest: Manifest) -> dict[str, str]:
    """What a checkpoint must record to count as trained on this config and data."""
    return {
        "config_hash": stage_config_hash(config, "train"),
        "training_data_hash": manifest.training_hash,
    }


def can_reuse(
    checkpoint: LoadedClassifier,
    lineage: dict[str, str],
    class_names: Sequence[str],
    keep_current: bool,
) -> bool:
    """The reuse rule of steps 3 and 3b (one place: ``wsss status`` asks it too)."""
    if not checkpoint.complete:
        return False
    if checkpoint.lineage == lineage:
        return True
    return (
        keep_current
        and checkpoint.lineage.get("config_hash") == lineage["config_hash"]
        and tuple(checkpoint.class_names) == tuple(class_names)
    )


def train_or_reuse(
    workspace: Workspace,
    config: PipelineConfig,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
    force: bool = False,
    resume: bool | None = None,
    stop_after_epoch: int | None = None,
    keep_current: bool = False,
) -> TrainOutcome:
    """Reuse, resume or train ``models/classifier.pt`` (see the module docstring)."""
    if force and resume:
        raise ValueError("force (train from scratch) and resume exclude each other")
    manifest = read_manifest(workspace)
    paths = TrainingPaths.in_dir(workspace.models_dir)
    lineage = training_lineage(config, manifest)
    if not force and not resume and paths.best.exists():
        current = load_checkpoint(paths.best)
        data_changed = current.lineage.get("training_data_hash") != lineage["training_data_hash"]
        if can_reuse(current, lineage, manifest.class_names, keep_current):
            check_class_names(current.class_names, manifest.class_names, paths.best)
            if data_changed:
                log(
                    "the labelled training images changed since the classifier was trained; "
                    f"reusing it, so only new or changed images get maps: {paths.best} "
                    "(retrain to learn from them)"
                )
            else:
                log(f"classifier up to date, reused: {paths.best}")
            pending = unfinished_run(paths.candidate, lineage)
            if pending is not None:
                log(f"an unfinished training run left {pending.describe(pending.path)}")
            return TrainOutcome(
                trained=False,
                data_changed=data_changed,
                val_map=current.val_map,
                model_hash=current.file_hash,
                best_epoch=int(current.metrics.get("epoch", 0)),
                epochs=int(current.metrics.get("epochs", current.config.get("epochs") or 0)),
                class_names=current.class_names,
                per_class_ap=current.per_class_ap,
                image_size=current.image_size,
                backbone=current.backbone,
                models_dir=str(paths.best.parent),
            )
    if resume is None:
        resume = not force and _unfinished_run_matches(paths, lineage)
    started = time.perf_counter()
    result = train_classifier(
        manifest,
        config.train,
        workspace.models_dir,
        device=config.device,
        progress=_tqdm_progress if show_progress else None,
        log=log,
        lineage=lineage,
        resume=bool(resume),
        stop_after_epoch=stop_after_epoch,
    )
    loaded = load_checkpoint(result.checkpoint)
    return TrainOutcome(
        trained=True,
        val_map=result.val_map,
        model_hash=loaded.file_hash,
        seconds=time.perf_counter() - started,
        best_epoch=result.best_epoch,
        epochs=int(result.config.epochs or 0),
        resumed_from=result.resumed_from,
        class_names=manifest.class_names,
        per_class_ap=result.per_class_ap,
        image_size=int(result.config.image_size or 0),
        backbone=result.config.backbone,
        models_dir=str(workspace.models_dir),
    )
