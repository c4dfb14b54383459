"""Training the multi-label CAM classifier on the manifest's image-level labels."""

from __future__ import annotations

import hashlib
import math
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
from wsss_core.model.classifier import CamClassifier, build_classifier
from wsss_core.model.device import resolve_device
from wsss_core.model.weights import load_initial_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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


def _train_transform(config: TrainConfig) -> v2.Transform:
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(config.image_size, scale=(0.6, 1.0), antialias=True)
    ]
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
        v2.ToDtype(torch.float32, scale=True),
        normalize(),
    ]
    return v2.Compose(steps)


def _eval_transform(config: TrainConfig) -> v2.Transform:
    return v2.Compose(
        [
            v2.Resize((config.image_size, config.image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            normalize(),
        ]
    )


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_map: float
    seconds: float


@dataclass(frozen=True)
class TrainingResult:
    checkpoint: Path
    history: tuple[EpochMetrics, ...]
    val_map: float
    per_class_ap: tuple[float, ...]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _param_groups(model: CamClassifier, config: TrainConfig) -> list[dict[str, Any]]:
    return [
        {
            "params": model.features.parameters(),
            "lr": config.learning_rate * config.backbone_lr_scale,
        },
        {"params": model.head.parameters(), "lr": config.learning_rate},
    ]


def _warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def predict_scores(
    model: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores and targets over a loader, model in eval mode."""
    model.eval()
    scores, targets = [], []
    for images, batch_targets in loader:
        scores.append(torch.sigmoid(model(images.to(device))).cpu().numpy())
        targets.append(batch_targets.numpy())
    return np.concatenate(scores), np.concatenate(targets)


def train_classifier(
    manifest: Manifest,
    config: TrainConfig,
    checkpoint_path: Path,
    device: str = "auto",
    progress: ProgressFactory | None = None,
    log: Callable[[str], None] = print,
    lineage: dict[str, str] | None = None,
) -> TrainingResult:
    """Train on the ``train`` split, validate on ``val`` each epoch, keep the best checkpoint."""
    train_records = [r for r in manifest.split("train") if r.labels]
    val_records = [r for r in manifest.split("val") if r.labels]
    if not train_records:
        raise ValueError("the manifest's train split has no labelled image; nothing to train on")
    if not val_records:
        log("no labelled 'val' images: validating on the training split")
        val_records = train_records
    num_classes = len(manifest.class_names)
    torch_device = resolve_device(device)
    seed_everything(config.seed)

    model = build_classifier(config.backbone, num_classes, config.output_stride)
    if config.weights:
        load_initial_weights(model, config.backbone, config.weights, log=log)
    model.to(torch_device)

    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(
        LabelledImages(train_records, num_classes, _train_transform(config)),
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=config.num_workers,
        drop_last=len(train_records) > config.batch_size,
    )
    val_loader = DataLoader(
        LabelledImages(val_records, num_classes, _eval_transform(config)),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
    )
    optimizer = torch.optim.AdamW(_param_groups(model, config), weight_decay=config.weight_decay)
    total_steps = config.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(total_steps, max(1, len(train_loader) // 2))
    )
    loss_fn = nn.BCEWithLogitsLoss()

    history: list[EpochMetrics] = []
    best_map, best_ap = -1.0, np.zeros(num_classes)
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        bar = progress(len(train_loader), f"epoch {epoch}/{config.epochs}") if progress else None
        running = 0.0
        for images, targets in train_loader:
            logits = model(images.to(torch_device))
            loss = loss_fn(logits, targets.to(torch_device))
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch}; lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        scores, targets = predict_scores(model, val_loader, torch_device)
        val_map, per_class = mean_average_precision(scores, targets)
        metrics = EpochMetrics(
            epoch, running / max(1, len(train_loader)), val_map, time.perf_counter() - started
        )
        history.append(metrics)
        log(
            f"epoch {epoch}: loss {metrics.train_loss:.4f}  val mAP {val_map:.4f}  "
            f"({metrics.seconds:.1f}s)"
        )
        if val_map > best_map:
            best_map, best_ap = val_map, per_class
            save_checkpoint(
                checkpoint_path, model, manifest.class_names, config, metrics, lineage or {}
            )
    return TrainingResult(
        checkpoint_path, tuple(history), best_map, tuple(float(x) for x in best_ap)
    )


def save_checkpoint(
    path: Path,
    model: CamClassifier,
    class_names: Sequence[str],
    config: TrainConfig,
    metrics: EpochMetrics,
    lineage: dict[str, str],
) -> None:
    """Weights plus everything needed to use them without this training loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "wsss-classifier/1",
        "backbone": config.backbone,
        "class_names": list(class_names),
        "config": config.model_dump(mode="json"),
        "metrics": {
            "epoch": metrics.epoch,
            "val_map": metrics.val_map,
            "train_loss": metrics.train_loss,
        },
        "lineage": dict(lineage),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


@dataclass(frozen=True)
class LoadedClassifier:
    model: CamClassifier
    class_names: tuple[str, ...]
    image_size: int
    val_map: float
    file_hash: str
    lineage: dict[str, str]


def load_checkpoint(path: Path, device: str = "cpu") -> LoadedClassifier:
    """Load a checkpoint written by :func:`save_checkpoint`, in eval mode."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model; run `wsss train` first")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != "wsss-classifier/1":
        raise ValueError(f"{path}: not a wsss classifier checkpoint")
    output_stride = int(payload["config"].get("output_stride", 32))
    model = build_classifier(payload["backbone"], len(payload["class_names"]), output_stride)
    model.load_state_dict(payload["state_dict"])
    model.to(resolve_device(device)).eval()
    return LoadedClassifier(
        model=model,
        class_names=tuple(payload["class_names"]),
        image_size=int(payload["config"]["image_size"]),
        val_map=float(payload["metrics"]["val_map"]),
        file_hash=hashlib.sha256(path.read_bytes()).hexdigest()[:16],
        lineage=dict(payload.get("lineage", {})),
    )
