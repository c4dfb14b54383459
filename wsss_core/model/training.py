"""Training the multi-label CAM classifier on the manifest's image-level labels.

One epoch: shuffle the ``train`` split, random resized crop + optional flip +
colour jitter (``torchvision.transforms.v2``), BCE-with-logits, AdamW with
separate backbone/head learning rates, per-step linear warm-up then cosine
decay, AMP on CUDA. Then validation mAP and per-class AP on ``val``.

After every epoch, atomically: ``last.pt`` (resume state), ``candidate.pt``
when validation mAP improved (the best model so far), ``history.parquet`` and
``training_curves.png``. Only when the last epoch is done is ``candidate.pt``
marked complete and renamed over ``classifier.pt`` (what later stages load), so
a killed or failing run leaves the previous finished model in place.

Resume is exact on CPU: every epoch re-seeds torch, numpy, ``random`` and the
loader's shuffling generator from ``(seed, epoch)``, so epoch ``e`` draws the
same crops and order whether or not the process was restarted before it; the
rest of the state (weights, AdamW moments, schedule, AMP scale) is in
``last.pt``.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from wsss_core.config import TrainConfig
from wsss_core.data.images import load_rgb
from wsss_core.data.manifest import ImageRecord, Manifest
from wsss_core.metrics import mean_average_precision
from wsss_core.model.checkpoint import (
    TRAINING_STATE_FORMAT,
    LoadedClassifier,
    TrainingPaths,
    atomic_torch_save,
    check_class_names,
    cpu_state_dict,
    load_checkpoint,
    load_training_state,
    read_payload,
    save_checkpoint,
)
from wsss_core.model.classifier import CamClassifier, build_classifier
from wsss_core.model.device import resolve_device
from wsss_core.model.history import EpochMetrics, plot_curves, write_history
from wsss_core.model.weights import load_initial_weights

__all__ = [
    "EpochMetrics",
    "LoadedClassifier",
    "TrainingPaths",
    "TrainingResult",
    "load_checkpoint",
    "resolve_train_config",
    "save_checkpoint",
    "to_tensor",
    "train_classifier",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Data-driven defaults (TrainConfig.image_size / epochs left unset).
MIN_AUTO_SIDE = 128  # pretrained backbones want some context; small images are upscaled
MAX_AUTO_SIDE = {"cpu": 256, "cuda": 448}  # the cost of a pass grows with the side squared
TARGET_STEPS = {"cpu": 150, "cuda": 600}  # optimiser steps a run aims at
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 3, 40
# On CPU, cap the work at this many image passes counted at 128 px (a few minutes on 2 cores).
CPU_BUDGET_IMAGES_128 = 12000

ProgressFactory = Callable[[int, str], Any]


def normalize() -> v2.Normalize:
    return v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8 [H, W, 3]`` to a normalised ``float32 [3, H, W]`` tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return normalize()(v2.functional.to_dtype(tensor, torch.float32, scale=True))


class LabelledImages(Dataset):
    """Images of the manifest with multi-hot targets; decoded lazily, one per item."""

    def __init__(self, records: Sequence[ImageRecord], num_classes: int, transform: v2.Transform):
        self.records = list(records)
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        record = self.records[index]
        image = torch.from_numpy(load_rgb(record.uri)).permute(2, 0, 1)
        target = torch.zeros(self.num_classes)
        target[list(record.labels)] = 1.0
        return self.transform(image), target


def train_transform(config: TrainConfig) -> v2.Transform:
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(config.image_size, scale=config.crop_scale, antialias=True)
    ]
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if config.color_jitter > 0:
        jitter = config.color_jitter
        steps.append(
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 6)
        )
    steps += [v2.ToDtype(torch.float32, scale=True), normalize()]
    return v2.Compose(steps)


def eval_transform(config: TrainConfig) -> v2.Transform:
    return v2.Compose(
        [
            v2.Resize((config.image_size, config.image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            normalize(),
        ]
    )


@dataclass(frozen=True)
class TrainingResult:
    checkpoint: Path  # the best model: classifier.pt, or candidate.pt while unfinished
    history: tuple[EpochMetrics, ...]
    val_map: float  # best validation mAP
    per_class_ap: tuple[float, ...]  # at the best epoch
    best_epoch: int
    config: TrainConfig  # image_size and epochs resolved
    completed: bool  # False when stopped early (stop_after_epoch)
    resumed_from: int = 0  # epochs already done before this call

    @property
    def epochs_run(self) -> int:
        return len(self.history) - self.resumed_from


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed that depends only on the run's seed and the epoch number."""
    return int(np.random.SeedSequence([seed % 2**32, epoch]).generate_state(1)[0])


def _usable_records(
    manifest: Manifest, log: Callable[[str], None]
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    train = manifest.split("train")
    train_records = [r for r in train if r.labels]
    if not train_records:
        splits = sorted({r.split for r in manifest.records})
        raise ValueError(
            "the manifest's train split has no labelled image; nothing to train on "
            f"({len(train)} train image(s); splits present: {splits or 'none'})"
        )
    if len(train_records) < len(train):
        log(f"{len(train) - len(train_records)} train image(s) without labels left out")
    val_records = [r for r in manifest.split("val") if r.labels]
    if not val_records:
        log("warning: no labelled 'val' images: validating on the training split (optimistic)")
        val_records = train_records
    return train_records, val_records


def _positives(records: Sequence[ImageRecord], num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, np.int64)
    for record in records:
        counts[list(record.labels)] += 1
    return counts


def _warn_about_classes(
    class_names: Sequence[str],
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    log: Callable[[str], None],
) -> None:
    train_counts = _positives(train_records, len(class_names))
    val_counts = _positives(val_records, len(class_names))
    absent = [name for name, count in zip(class_names, train_counts, strict=True) if count == 0]
    if absent:
        log(
            f"warning: {len(absent)} class(es) have no positive training image and cannot be "
            f"learnt (their CAMs will be meaningless): {', '.join(absent)}"
        )
    no_val = [name for name, count in zip(class_names, val_counts, strict=True) if count == 0]
    if no_val:
        log(
            f"warning: {len(no_val)} class(es) have no positive validation image; their AP is "
            f"undefined (NaN) and left out of mAP: {', '.join(no_val)}"
        )


def resolve_train_config(
    config: TrainConfig, train_records: Sequence[ImageRecord], device_type: str = "cpu"
) -> tuple[TrainConfig, list[str]]:
    """Fill in ``image_size`` / ``epochs`` left unset, and say why (one line each).

    Image side: the median longer side of the training images, rounded to a
    multiple of 32 and clamped to ``[128, 256]`` on CPU (``[128, 448]`` on CUDA).
    Epochs: enough for about 150 optimiser steps on CPU (600 on CUDA), within
    ``[3, 40]``; on CPU also at most ``CPU_BUDGET_IMAGES_128`` image passes
    counted at 128 px, so a thousand images train in minutes, not hours.
    """
    reasons: list[str] = []
    kind = "cuda" if device_type == "cuda" else "cpu"
    image_size = config.image_size
    if image_size is None:
        median_side = float(np.median([max(r.width, r.height) for r in train_records]))
        image_size = int(min(max(round(median_side / 32) * 32, MIN_AUTO_SIDE), MAX_AUTO_SIDE[kind]))
        reasons.append(f"image size {image_size} (median image side {median_side:.0f} px)")
    epochs = config.epochs
    if epochs is None:
        batches = max(1, len(train_records) // config.batch_size)
        epochs = math.ceil(TARGET_STEPS[kind] / batches)
        if kind == "cpu":
            cost = len(train_records) * (image_size / 128) ** 2
            epochs = min(epochs, int(CPU_BUDGET_IMAGES_128 // cost))
        epochs = min(max(epochs, MIN_AUTO_EPOCHS), MAX_AUTO_EPOCHS)
        reasons.append(
            f"{epochs} epochs ({len(train_records)} training images, {batches} steps/epoch)"
        )
    return config.model_copy(update={"image_size": image_size, "epochs": epochs}), reasons


def _param_groups(model: CamClassifier, config: TrainConfig) -> list[dict[str, Any]]:
    return [
        {
            "params": list(model.features.parameters()),
            "lr": config.learning_rate * config.backbone_lr_scale,
        },
        {"params": list(model.head.parameters()), "lr": config.learning_rate},
    ]


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def predict_scores(
    model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores and targets over a loader, model in eval mode."""
    model.eval()
    scores, targets = [], []
    for images, batch_targets in loader:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images.to(device, non_blocking=True))
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        targets.append(batch_targets.numpy())
    return np.concatenate(scores), np.concatenate(targets)


def _num_workers(config: TrainConfig, device: torch.device) -> int:
    if config.num_workers is not None:
        return config.num_workers
    if device.type != "cuda":
        return 0  # decoding small images costs little next to a CPU forward/backward
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@dataclass
class _Run:
    """Everything that changes while training; ``last.pt`` is this, serialised."""

    model: CamClassifier
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    history: list[EpochMetrics]
    best_epoch: int = 0
    best_map: float = -math.inf


def _requested(config: TrainConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def _check_resumable(
    state: dict[str, Any],
    path: Path,
    manifest: Manifest,
    config: TrainConfig,
) -> None:
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
    requested, stored = _requested(config), state["requested_config"]
    if requested != stored:
        changed = sorted(
            k for k in set(requested) | set(stored) if requested.get(k) != stored.get(k)
        )
        raise ValueError(
            f"{path}: that run used a different train config (differs in: {', '.join(changed)}); "
            "resume with the same config or train without --resume"
        )


def _save_training_state(
    path: Path,
    run: _Run,
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
        },
        path,
    )


def _best_metrics(run: _Run, config: TrainConfig, complete: bool) -> dict[str, Any]:
    best = run.history[run.best_epoch - 1]
    return {
        "epoch": best.epoch,
        "val_map": best.val_map,
        "per_class_ap": list(best.val_ap),
        "train_loss": best.train_loss,
        "epochs": config.epochs,
        "epochs_done": len(run.history),
        "complete": complete,
    }


def _write_history(
    paths: TrainingPaths, run: _Run, manifest: Manifest, config: TrainConfig, complete: bool
) -> None:
    write_history(
        paths.history,
        run.history,
        manifest.class_names,
        config.model_dump(mode="json"),
        run.best_epoch,
        complete,
    )


def _is_promoted(payload: dict[str, Any] | None, run: _Run) -> bool:
    """True when ``payload`` is this finished run's best model, marked complete."""
    metrics = (payload or {}).get("metrics", {})
    return (
        bool(metrics.get("complete"))
        and metrics.get("epoch") == run.best_epoch
        and metrics.get("epochs_done", len(run.history)) == len(run.history)
    )


def _promote_candidate(paths: TrainingPaths, run: _Run, config: TrainConfig) -> None:
    """Mark the run's best model complete, then rename it over ``classifier.pt``.

    Each step is atomic and a repeat after a kill between them finishes the job,
    so ``classifier.pt`` is always the previous complete model or this one.
    """
    payload = read_payload(paths.candidate)
    if payload is None:
        if _is_promoted(read_payload(paths.best), run):  # promoted by an earlier call
            return
        raise FileNotFoundError(
            f"{paths.candidate}: the best model of this training run is missing; "
            "train again without --resume"
        )
    if not payload["metrics"].get("complete"):
        payload["metrics"] = _best_metrics(run, config, complete=True)
        atomic_torch_save(payload, paths.candidate)
    os.replace(paths.candidate, paths.best)


def _discard_previous_run(paths: TrainingPaths) -> None:
    """A fresh run drops an earlier run's candidate and resume state.

    So ``candidate.pt`` and ``last.pt``, when both exist, belong to one run and a
    resume never promotes another run's model. ``last.pt`` first: a kill between
    the two leaves a candidate nothing resumes (the next fresh run drops it).
    """
    paths.last.unlink(missing_ok=True)
    paths.candidate.unlink(missing_ok=True)


def _adopt_legacy_candidate(paths: TrainingPaths, state: dict[str, Any]) -> None:
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


def _build_run(
    config: TrainConfig,
    num_classes: int,
    steps_per_epoch: int,
    device: torch.device,
    use_amp: bool,
    log: Callable[[str], None],
    initial_weights: bool,
) -> _Run:
    seed_everything(config.seed)
    model = build_classifier(config.backbone, num_classes, config.output_stride)
    if initial_weights and config.weights:
        load_initial_weights(model, config.backbone, config.weights, log=log)
    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, config), weight_decay=config.weight_decay)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, min(warmup_steps, total_steps))
    )
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    return _Run(model, optimizer, scheduler, scaler, [])


def _restore_run(run: _Run, state: dict[str, Any]) -> None:
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.history = [EpochMetrics.from_dict(row) for row in state["history"]]
    run.best_epoch = int(state["best_epoch"])
    run.best_map = float(state["best_map"])


def _train_one_epoch(
    run: _Run,
    loader: DataLoader,
    device: torch.device,
    use_amp: bool,
    epoch: int,
    epochs: int,
    progress: ProgressFactory | None,
) -> float:
    loss_fn = nn.BCEWithLogitsLoss()
    run.model.train()
    bar = progress(len(loader), f"epoch {epoch}/{epochs}") if progress else None
    total, batches = 0.0, 0
    for images, targets in loader:
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = run.model(images.to(device, non_blocking=True))
        loss = loss_fn(logits.float(), targets.to(device, non_blocking=True))
        if not torch.isfinite(loss):
            if bar is not None:
                bar.close()
            raise FloatingPointError(
                f"training loss became {loss.item()} at epoch {epoch}, batch {batches + 1}; "
                "lower train.learning_rate (or check the images) and train again"
            )
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        total += loss.item()
        batches += 1
        if bar is not None:
            bar.update(1)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{total / batches:.4f}", refresh=False)
    if bar is not None:
        bar.close()
    return total / max(1, batches)


def train_classifier(
    manifest: Manifest,
    config: TrainConfig,
    models_dir: Path,
    device: str = "auto",
    progress: ProgressFactory | None = None,
    log: Callable[[str], None] = print,
    lineage: dict[str, str] | None = None,
    resume: bool = False,
    stop_after_epoch: int | None = None,
) -> TrainingResult:
    """Train on ``train``, validate on ``val`` each epoch, keep the best and the last state.

    Writes :class:`TrainingPaths` under ``models_dir``; ``classifier.pt`` only
    at the end, when the finished run's ``candidate.pt`` replaces it. A fresh
    run discards an earlier unfinished one. ``resume`` continues the
    run saved in ``last.pt`` (same class list, manifest and config, else a
    clear error) without redoing its finished epochs. ``stop_after_epoch``
    returns after that epoch as if the process had been killed there (tests).
    """
    paths = TrainingPaths.in_dir(models_dir)
    lineage = dict(lineage or {})
    train_records, val_records = _usable_records(manifest, log)
    num_classes = len(manifest.class_names)
    torch_device = resolve_device(device)
    use_amp = config.amp and torch_device.type == "cuda"
    requested = _requested(config)

    state: dict[str, Any] | None = None
    if resume:
        state = load_training_state(paths.last)
        _check_resumable(state, paths.last, manifest, config)
        _adopt_legacy_candidate(paths, state)
        resolved = TrainConfig.model_validate(state["config"])
    else:
        resolved, reasons = resolve_train_config(config, train_records, torch_device.type)
        for reason in reasons:
            log(f"chosen from the data: {reason}")
        _warn_about_classes(manifest.class_names, train_records, val_records, log)
    config = resolved

    workers = _num_workers(config, torch_device)
    loader_generator = torch.Generator()
    train_loader = DataLoader(
        LabelledImages(train_records, num_classes, train_transform(config)),
        batch_size=config.batch_size,
        shuffle=True,
        generator=loader_generator,
        num_workers=workers,
        pin_memory=torch_device.type == "cuda",
        drop_last=len(train_records) > config.batch_size,
    )
    val_loader = DataLoader(
        LabelledImages(val_records, num_classes, eval_transform(config)),
        batch_size=config.batch_size,
        num_workers=workers,
        pin_memory=torch_device.type == "cuda",
    )
    run = _build_run(
        config, num_classes, len(train_loader), torch_device, use_amp, log, state is None
    )
    if state is not None:
        _restore_run(run, state)
        log(f"resuming after epoch {len(run.history)}/{config.epochs} from {paths.last}")
    else:
        _discard_previous_run(paths)
    resumed_from = len(run.history)

    for epoch in range(resumed_from + 1, config.epochs + 1):
        started = time.perf_counter()
        seed = epoch_seed(config.seed, epoch)
        seed_everything(seed)
        loader_generator.manual_seed(seed)
        train_loss = _train_one_epoch(
            run, train_loader, torch_device, use_amp, epoch, config.epochs, progress
        )
        scores, targets = predict_scores(run.model, val_loader, torch_device, use_amp)
        val_map, per_class = mean_average_precision(scores, targets)
        lrs = run.scheduler.get_last_lr()
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            val_map=val_map,
            val_ap=tuple(float(x) for x in per_class),
            lr=float(lrs[1]),
            backbone_lr=float(lrs[0]),
            seconds=time.perf_counter() - started,
        )
        run.history.append(metrics)
        improved = math.isfinite(val_map) and val_map > run.best_map
        if improved or run.best_epoch == 0:
            run.best_epoch, run.best_map = epoch, val_map if math.isfinite(val_map) else -math.inf
            save_checkpoint(
                paths.candidate,
                run.model,
                manifest.class_names,
                config.model_dump(mode="json"),
                _best_metrics(run, config, complete=False),
                lineage,
            )
        _save_training_state(paths.last, run, manifest, config, requested, lineage)
        complete = epoch == config.epochs
        _write_history(paths, run, manifest, config, complete)
        plot_curves(paths.curves, run.history, f"{config.backbone}, {config.image_size} px")
        log(
            f"epoch {epoch}/{config.epochs}: loss {train_loss:.4f}  val mAP {val_map:.4f}"
            f"{'  (best)' if run.best_epoch == epoch else ''}  ({metrics.seconds:.1f}s)"
        )
        if stop_after_epoch is not None and epoch >= stop_after_epoch and not complete:
            return _result(paths, run, config, completed=False, resumed_from=resumed_from)

    _promote_candidate(paths, run, config)
    if resumed_from == config.epochs:
        log(f"nothing to resume: all {config.epochs} epochs of {paths.last} are done")
        _write_history(paths, run, manifest, config, complete=True)
    return _result(paths, run, config, completed=True, resumed_from=resumed_from)


def _result(
    paths: TrainingPaths, run: _Run, config: TrainConfig, completed: bool, resumed_from: int
) -> TrainingResult:
    best = run.history[run.best_epoch - 1]
    return TrainingResult(
        checkpoint=paths.best if completed else paths.candidate,
        history=tuple(run.history),
        val_map=best.val_map,
        per_class_ap=best.val_ap,
        best_epoch=run.best_epoch,
        config=config,
        completed=completed,
        resumed_from=resumed_from,
    )


def describe_ap(class_names: Sequence[str], per_class_ap: Sequence[float]) -> str:
    """``digit_0 0.99, digit_1 0.97, ...`` (``n/a`` where undefined)."""
    return ", ".join(
        f"{name} {ap:.2f}" if math.isfinite(ap) else f"{name} n/a"
        for name, ap in zip(class_names, per_class_ap, strict=True)
    )
