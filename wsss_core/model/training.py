"""The training loop of the multi-label CAM classifier on the manifest's image-level labels.

One epoch: shuffle the ``train`` split, random resized crop + optional flip +
colour jitter (:mod:`~wsss_core.model.transforms`), BCE-with-logits (summed over
the branches of an MDC head, each with its own classifier, or over the two heads
of online erasing), AdamW with
separate backbone/head learning rates, per-step linear warm-up then cosine
decay, AMP on CUDA. Then validation mAP and per-class AP on ``val``. What each
epoch writes, and when ``classifier.pt`` changes, is :mod:`~wsss_core.model.run_files`'s.

Resume is exact on CPU: every epoch re-seeds torch, numpy, ``random`` and the
loader's shuffling generator from ``(seed, epoch)``, so epoch ``e`` draws the
same crops and order whether or not the process was restarted before it; the
rest of the state (weights, AdamW moments, schedule, AMP scale) is in
``last.pt``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from wsss_core.cam import class_activation_maps
from wsss_core.config import TrainConfig
from wsss_core.data.manifest import Manifest
from wsss_core.metrics import mean_average_precision

# Called as run_files.step(...): one protocol, read as such, and a fault drill can stop any step.
from wsss_core.model import run_files
from wsss_core.model.checkpoint import TrainingPaths, load_training_state
from wsss_core.model.classifier import Classifier, classifier_for
from wsss_core.model.dataset import LabelledImages, training_records, warn_about_classes
from wsss_core.model.device import resolve_device
from wsss_core.model.history import EpochMetrics, plot_curves
from wsss_core.model.iterative_erasing import ErasingRoundsClassifier, erasing_rounds
from wsss_core.model.sizing import loader_workers, resolve_train_config
from wsss_core.model.transforms import eval_transform, train_transform
from wsss_core.model.weights import load_initial_weights

ProgressFactory = Callable[[int, str], Any]
# Iterative erasing: (images, multi-hot targets) -> the images the earlier rounds erased.
Eraser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    # image id -> its file and why: unreadable, left out (run_files.RunState.skipped_images)
    skipped_images: dict[str, str] = field(default_factory=dict)

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


def param_groups(model: Classifier, config: TrainConfig) -> list[dict[str, Any]]:
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
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp: bool = False,
    erase: Eraser | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores and targets over a loader, model in eval mode (``erase``: on the
    images the earlier erasing rounds erased)."""
    model.eval()
    scores, targets = [], []
    for images, batch_targets in loader:
        images = images.to(device, non_blocking=True)
        if erase is not None:
            images = erase(images, batch_targets.to(device))
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        targets.append(batch_targets.numpy())
    return np.concatenate(scores), np.concatenate(targets)


def build_run(
    config: TrainConfig,
    num_classes: int,
    steps_per_epoch: int,
    device: torch.device,
    use_amp: bool,
    log: Callable[[str], None],
    initial_weights: bool,
) -> run_files.RunState:
    seed_everything(config.seed)
    # With iterative erasing each round trains an ordinary classifier of its own.
    model = classifier_for({**config.model_dump(mode="json"), "erasing_rounds": 0}, num_classes)
    if initial_weights and config.weights:
        load_initial_weights(model, config.backbone, config.weights, log=log)
    model.to(device)
    optimizer = torch.optim.AdamW(param_groups(model, config), weight_decay=config.weight_decay)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, min(warmup_steps, total_steps))
    )
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    return run_files.RunState(model, optimizer, scheduler, scaler, [])


def _train_one_epoch(
    run: run_files.RunState,
    loader: DataLoader,
    device: torch.device,
    use_amp: bool,
    epoch: int,
    epochs: int,
    progress: ProgressFactory | None,
    erase: Eraser | None = None,
) -> float:
    loss_fn = nn.BCEWithLogitsLoss()
    run.model.train()
    bar = progress(len(loader), f"epoch {epoch}/{epochs}") if progress else None
    total, batches = 0.0, 0
    for images, targets in loader:
        targets = targets.to(device, non_blocking=True)
        images = images.to(device, non_blocking=True)
        if erase is not None:  # iterative erasing: the earlier rounds erase, frozen
            images = erase(images, targets)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            outputs = run.model.training_logits(images, targets)
        # One output: its loss as it is; MDC branches or the two heads of online erasing:
        # the sum of theirs (Wei et al. 2018, Zhang et al. 2018).
        loss = functools.reduce(operator.add, (loss_fn(out.float(), targets) for out in outputs))
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
    if resume and config.erasing_rounds:
        raise ValueError(
            f"{paths.last}: iterative erasing (train.erasing_rounds) trains its rounds without "
            "resume: train without --resume (a killed run restarts from round 0)"
        )
    rows = training_records(manifest, log)
    train_records, val_records = rows.train, rows.val
    num_classes = len(manifest.class_names)
    torch_device = resolve_device(device)
    use_amp = config.amp and torch_device.type == "cuda"
    requested = run_files.requested_config(config)

    state: dict[str, Any] | None = None
    if resume:
        state = load_training_state(paths.last)
        run_files.check_resumable(state, paths.last, manifest, config)
        run_files.adopt_legacy_candidate(paths, state)
        resolved = TrainConfig.model_validate(state["config"])
    else:
        resolved, reasons = resolve_train_config(config, train_records, torch_device.type)
        for reason in reasons:
            log(f"chosen from the data: {reason}")
        warn_about_classes(manifest.class_names, train_records, val_records, log)
    config = resolved

    workers = loader_workers(config, torch_device)
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
    run = build_run(
        config, num_classes, len(train_loader), torch_device, use_amp, log, state is None
    )
    run.skipped_images = dict(rows.skipped)
    if state is not None:
        run_files.restore_run(run, state)
        log(f"resuming after epoch {len(run.history)}/{config.epochs} from {paths.last}")
    else:
        run_files.discard_previous_run(paths)
    resumed_from = len(run.history)

    if config.erasing_rounds:
        loaders = _Loaders(train_loader, val_loader, loader_generator)
        return _train_erasing_rounds(
            paths, run, loaders, manifest, config, lineage, torch_device, use_amp, progress, log
        )

    for epoch in range(resumed_from + 1, config.epochs + 1):
        metrics = _run_epoch(
            run,
            _Loaders(train_loader, val_loader, loader_generator),
            config,
            epoch,
            torch_device,
            use_amp,
            progress,
        )
        train_loss, val_map = metrics.train_loss, metrics.val_map
        if _record(run, metrics):
            run_files.save_candidate(paths, run, manifest, config, lineage)
        run_files.save_training_state(paths.last, run, manifest, config, requested, lineage)
        complete = epoch == config.epochs
        run_files.write_run_history(paths, run, manifest, config, complete)
        plot_curves(paths.curves, run.history, f"{config.backbone}, {config.image_size} px")
        log(
            f"epoch {epoch}/{config.epochs}: loss {train_loss:.4f}  val mAP {val_map:.4f}"
            f"{'  (best)' if run.best_epoch == epoch else ''}  ({metrics.seconds:.1f}s)"
        )
        if stop_after_epoch is not None and epoch >= stop_after_epoch and not complete:
            return _result(paths, run, config, completed=False, resumed_from=resumed_from)

    run_files.promote_candidate(paths, run, config)
    if resumed_from == config.epochs:
        log(f"nothing to resume: all {config.epochs} epochs of {paths.last} are done")
        run_files.write_run_history(paths, run, manifest, config, complete=True)
    return _result(paths, run, config, completed=True, resumed_from=resumed_from)


@dataclass(frozen=True)
class _Loaders:
    train: DataLoader
    val: DataLoader
    generator: torch.Generator  # the train loader's shuffling generator


def _run_epoch(
    run: run_files.RunState,
    loaders: _Loaders,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
    use_amp: bool,
    progress: ProgressFactory | None,
    erase: Eraser | None = None,
) -> EpochMetrics:
    """One epoch of training and its validation, seeded by ``(seed, epoch)`` only."""
    started = time.perf_counter()
    seed = epoch_seed(config.seed, epoch)
    seed_everything(seed)
    loaders.generator.manual_seed(seed)
    train_loss = _train_one_epoch(
        run, loaders.train, device, use_amp, epoch, config.epochs, progress, erase
    )
    scores, targets = predict_scores(run.model, loaders.val, device, use_amp, erase)
    val_map, per_class = mean_average_precision(scores, targets)
    lrs = run.scheduler.get_last_lr()
    return EpochMetrics(
        epoch=epoch,
        train_loss=train_loss,
        val_map=val_map,
        val_ap=tuple(float(x) for x in per_class),
        lr=float(lrs[1]),
        backbone_lr=float(lrs[0]),
        seconds=time.perf_counter() - started,
    )


def _record(run: run_files.RunState, metrics: EpochMetrics) -> bool:
    """Append the epoch to the history; True when it is the run's best so far."""
    run.history.append(metrics)
    val_map = metrics.val_map
    improved = math.isfinite(val_map) and val_map > run.best_map
    if improved or run.best_epoch == 0:
        run.best_epoch = metrics.epoch
        run.best_map = val_map if math.isfinite(val_map) else -math.inf
        return True
    return False


def round_eraser(rounds: list[nn.Module], threshold: float) -> Eraser:
    """The images (normalised) erased by the finished ``rounds`` in turn, where each one's
    plain CAM (one scale, no flip) of a labelled class is >= ``threshold``."""

    def maps_of(model: nn.Module, images: torch.Tensor, classes) -> list[torch.Tensor]:
        return [torch.from_numpy(m) for m in class_activation_maps(model, images, classes)]

    def erase(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        classes = [torch.nonzero(row > 0.5).flatten().tolist() for row in targets.cpu()]
        return erasing_rounds(rounds, images, classes, threshold, maps_of)[1]

    return erase


def _train_erasing_rounds(
    paths: TrainingPaths,
    first: run_files.RunState,
    loaders: _Loaders,
    manifest: Manifest,
    config: TrainConfig,
    lineage: dict[str, str],
    device: torch.device,
    use_amp: bool,
    progress: ProgressFactory | None,
    log: Callable[[str], None],
) -> TrainingResult:
    """Iterative erasing (AE-PSL): round 0 as without it, then each round a fresh classifier
    on the images the earlier rounds erase; ``classifier.pt`` holds every round's best.

    No ``last.pt``: a killed run restarts from round 0. ``history.parquet`` lists every
    round's epochs one after the other; the metrics are round 0's (its scores are the
    classifier's).
    """
    run_files.discard_previous_run(paths)
    finished: list[nn.Module] = []
    history: list[EpochMetrics] = []
    run = first
    for round_index in range(config.erasing_rounds + 1):
        if round_index:
            run = build_run(
                config,
                len(manifest.class_names),
                len(loaders.train),
                device,
                use_amp,
                log,
                initial_weights=True,
            )
        erase = round_eraser(finished, config.erasing_threshold) if finished else None
        best_state: dict[str, torch.Tensor] = {}
        for epoch in range(1, config.epochs + 1):
            metrics = _run_epoch(run, loaders, config, epoch, device, use_amp, progress, erase)
            if _record(run, metrics):
                best_state = run_files.cpu_state_dict(run.model)
            log(
                f"erasing round {round_index}/{config.erasing_rounds}, epoch {epoch}/"
                f"{config.epochs}: loss {metrics.train_loss:.4f}  val mAP {metrics.val_map:.4f}"
            )
        run.model.load_state_dict(best_state)
        finished.append(run.model.eval().requires_grad_(False))
        offset = len(history)
        history.extend(dataclasses.replace(m, epoch=offset + m.epoch) for m in run.history)
    first.model = ErasingRoundsClassifier(finished, config.erasing_threshold)
    first.history = history  # round 0's epochs first: its best epoch keeps its number
    run_files.save_candidate(paths, first, manifest, config, lineage)
    run_files.write_run_history(paths, first, manifest, config, complete=True)
    plot_curves(paths.curves, history, f"{config.backbone}, {config.image_size} px, rounds")
    run_files.promote_candidate(paths, first, config)
    return _result(paths, first, config, completed=True, resumed_from=0)


def _result(
    paths: TrainingPaths,
    run: run_files.RunState,
    config: TrainConfig,
    completed: bool,
    resumed_from: int,
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
        skipped_images=dict(run.skipped_images),
    )
