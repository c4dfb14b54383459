"""Classifier checkpoints: the best model (what later stages load) and the resume state.

``models/classifier.pt`` (format ``wsss-classifier/1``) is a plain ``torch.save``
dict that loads with ``weights_only=True`` and needs nothing from the training
loop: ``backbone``, ``class_names``, ``config`` (the training config actually
used, ``image_size`` and ``epochs`` resolved), ``metrics`` (epoch, val_map,
per_class_ap, train_loss, epochs, complete), ``lineage`` and ``state_dict``
(a :class:`~wsss_core.model.classifier.CamClassifier`, or with
``config["multi_dilation"]`` a ``MultiDilationClassifier``, with
``config["online_erasing_threshold"]`` an ``OnlineErasingClassifier``, with
``config["erasing_rounds"]`` an ``ErasingRoundsClassifier`` holding every round's)::

    payload = torch.load("classifier.pt", weights_only=True)
    model = classifier_for(payload["config"], len(payload["class_names"]))
    model.load_state_dict(payload["state_dict"])

``models/candidate.pt`` is the same format: the best model of a training run
still going, killed or failed (``complete`` false). Only a finished run
renames it over ``classifier.pt``, so the map stages keep the previous
complete model until then.

``models/last.pt`` (format ``wsss-training-state/1``) is the state after the
last finished epoch: the same fields plus optimiser, scheduler, AMP scaler,
history and the best epoch so far. It is what ``wsss train --resume`` continues.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wsss_core.model.classifier import Classifier, classifier_for
from wsss_core.model.device import resolve_device
from wsss_core.store.atomic import save_torch_atomic

CHECKPOINT_FORMAT = "wsss-classifier/1"
TRAINING_STATE_FORMAT = "wsss-training-state/1"

BEST_CHECKPOINT = "classifier.pt"
CANDIDATE_CHECKPOINT = "candidate.pt"
LAST_CHECKPOINT = "last.pt"
HISTORY_FILE = "history.parquet"
CURVES_FILE = "training_curves.png"


@dataclass(frozen=True)
class TrainingPaths:
    """Where one training run keeps its artefacts (a workspace's ``models/``)."""

    best: Path  # the last finished run's best model: what the map stages load
    last: Path
    history: Path
    curves: Path
    candidate: Path  # the best model so far of a run not finished yet

    @classmethod
    def in_dir(cls, directory: Path) -> TrainingPaths:
        directory = Path(directory)
        return cls(
            directory / BEST_CHECKPOINT,
            directory / LAST_CHECKPOINT,
            directory / HISTORY_FILE,
            directory / CURVES_FILE,
            directory / CANDIDATE_CHECKPOINT,
        )


def atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file in the same directory, then rename into place."""
    save_torch_atomic(path, payload)


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def save_checkpoint(
    path: Path,
    model: Classifier | dict[str, torch.Tensor],
    class_names: Sequence[str],
    config: dict[str, Any],
    metrics: dict[str, Any],
    lineage: dict[str, str],
) -> None:
    """Weights plus everything needed to use them without the training loop (atomic)."""
    state = model if isinstance(model, dict) else cpu_state_dict(model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "backbone": config["backbone"],
        "class_names": list(class_names),
        "config": dict(config),
        "metrics": dict(metrics),
        "lineage": dict(lineage),
        "state_dict": state,
    }
    atomic_torch_save(payload, path)


def check_class_names(
    found: Sequence[str], expected: Sequence[str], path: Path, hint: str = ""
) -> None:
    """A clear error when a checkpoint's classes are not the manifest's (order matters)."""
    if tuple(found) == tuple(expected):
        return
    only_found = [name for name in found if name not in expected]
    only_expected = [name for name in expected if name not in found]
    if only_found or only_expected:
        detail = f"only in checkpoint: {only_found}; only in manifest: {only_expected}"
    else:
        detail = "same names in a different order"
    raise ValueError(
        f"{path}: class list of the checkpoint ({len(found)} classes) does not match the "
        f"manifest's ({len(expected)}): {detail}{hint}"
    )


@dataclass(frozen=True)
class LoadedClassifier:
    model: Classifier
    class_names: tuple[str, ...]
    image_size: int
    val_map: float
    file_hash: str
    lineage: dict[str, str]
    backbone: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """False while the run that wrote it is unfinished (killed or still training)."""
        return bool(self.metrics.get("complete", True))

    @property
    def per_class_ap(self) -> tuple[float, ...]:
        values = self.metrics.get("per_class_ap") or []
        return tuple(float("nan") if v is None else float(v) for v in values)


def require_complete(checkpoint: LoadedClassifier, path: Path) -> None:
    """Refuse the best-so-far model of an unfinished run: maps must come from a finished one."""
    if checkpoint.complete:
        return
    epoch, epochs = checkpoint.metrics.get("epoch", "?"), checkpoint.metrics.get("epochs", "?")
    raise ValueError(
        f"{path}: model of an unfinished training run (best epoch {epoch} of {epochs}); "
        "finish it with `wsss train --resume` (or retrain: `wsss train --force`)"
    )


def read_payload(path: Path) -> dict[str, Any] | None:
    """A checkpoint or training state as a plain dict; None when missing or unreadable."""
    if not Path(path).exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file counts as absent here
        return None
    return payload if isinstance(payload, dict) else None


def file_hash(path: Path) -> str:
    """Short content hash of a checkpoint: the ``model_hash`` in every map's lineage."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_checkpoint(
    path: Path, device: str = "cpu", class_names: Sequence[str] | None = None
) -> LoadedClassifier:
    """Load a checkpoint written by :func:`save_checkpoint`, in eval mode.

    With ``class_names`` (the manifest's), a checkpoint trained on another class
    list is a clear error instead of maps for the wrong classes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model; run `wsss train` first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, pickle of another kind, ...
        raise ValueError(f"{path}: unreadable checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a wsss classifier checkpoint")
    if class_names is not None:
        check_class_names(payload["class_names"], class_names, path, "; retrain the classifier")
    recorded = {**payload["config"], "backbone": payload["backbone"]}
    model = classifier_for(recorded, len(payload["class_names"]))
    model.load_state_dict(payload["state_dict"])
    model.to(resolve_device(device)).eval()
    return LoadedClassifier(
        model=model,
        class_names=tuple(payload["class_names"]),
        image_size=int(payload["config"]["image_size"]),
        val_map=float(payload["metrics"]["val_map"]),
        file_hash=file_hash(path),
        lineage=dict(payload.get("lineage", {})),
        backbone=str(payload["backbone"]),
        config=dict(payload["config"]),
        metrics=dict(payload["metrics"]),
    )


def load_training_state(path: Path) -> dict[str, Any]:
    """The resume state written after each epoch (``models/last.pt``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: nothing to resume (no epoch of an earlier run finished); "
            "train without --resume"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: unreadable training state ({error})") from error
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise ValueError(f"{path}: not a wsss training state")
    return state
