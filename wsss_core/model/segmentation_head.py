"""The self-training head: per-pixel classes from the classifier's frozen features.

Trained once per *lineage*: the classifier checkpoint's hash, every section
the crf stage's first pass depends on (its training labels are that pass's
masks) and the self_training section's training settings (not ``head_weight``,
which only mixes, nor the second pass's ``cpu_threads`` and ``test_scales``; a
setting at the behaviour from before it existed is left out too, so older heads
stay current). The file lives at
``models/segmentation/<lineage>.pt``, so a run that finds it skips training and
compared configs never overwrite each other's head. Like the affinity head it is
not retrained because images were added: new images are labelled with it.

Training data: ``train_images`` labelled images spread evenly over the
manifest, each with its first-pass mask brought to the head's grid (nearest
pixel: one label per cell, unknown pixels ignored). The frozen backbone's
feature pyramid of every training image is computed once and kept (float16).
The loss is cross-entropy over background and the image's own classes only:
the image-level labels say which classes can be there, so the head never has
to learn to rule the others out. Training is seeded and runs in one process on
``training_threads`` CPU threads (the shards wait for the head, so their
cores are free; a fixed count, as the sums split by it), so it gives the same
head whichever runner computes the masks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss_core.affinity import feature_pyramid, level_branches, levels_on_grid
from wsss_core.config import (
    PipelineConfig,
    SelfTrainingConfig,
    at_earlier_behaviour,
    stage_config_hash,
)
from wsss_core.model.affinity_head import network_input
from wsss_core.model.trunk_heads import (
    epoch_batches,
    grid_groups,
    read_head_file,
    save_head_file,
    stacked_levels,
    trained_layout,
    training_layout,
)
from wsss_core.probability import UNKNOWN, label_channels
from wsss_core.store.workspace import Workspace

HEAD_FORMAT = "wsss-segmentation-head/1"
IGNORED = -100  # cross-entropy's ignore_index: a cell with no known label
RULED_OUT = -1e4  # the logit of a class the image is not labelled with

# Settings of the second CRF pass, not of the head: changing them reuses the head.
# (training_threads is the head's: its training sums split by thread count.)
INFERENCE_KEYS = {"enabled", "head_weight", "cpu_threads", "test_scales"}

Progress = Callable[[str], None]


class SegmentationHead(nn.Module):
    """Logits of background + every class per grid cell, from a frozen feature pyramid.

    Each level: 1x1 convolution to ``width`` channels, group norm, ReLU, resized
    to the grid; concatenated; a 3x3 convolution (so a cell sees its
    neighbours), group norm, ReLU and a 1x1 convolution to ``num_labels``.
    """

    def __init__(self, level_channels: Sequence[int], num_labels: int, width: int = 64):
        super().__init__()
        self.level_channels = tuple(int(c) for c in level_channels)
        self.num_labels = int(num_labels)
        self.width = int(width)
        self.branches = level_branches(self.level_channels, self.width)
        self.mix = nn.Sequential(
            nn.Conv2d(width * len(self.level_channels), width, 3, padding=1, bias=False),
            nn.GroupNorm(4, width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, self.num_labels, 1),
        )

    def forward(self, levels: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Logits ``[B, num_labels, *size]``."""
        return self.mix(levels_on_grid(self.branches, levels, size))


def head_lineage(config: PipelineConfig, classifier_hash: str) -> str:
    """What a head is trained from: the classifier, the first-pass masks, the settings."""
    first_pass = config.model_copy(
        update={"self_training": config.self_training.model_copy(update={"enabled": False})}
    )
    settings = config.self_training
    left_out = INFERENCE_KEYS | at_earlier_behaviour("self_training", settings)
    training = settings.model_dump(mode="json", exclude=left_out)
    text = (
        f"{classifier_hash}|{stage_config_hash(first_pass, 'crf')}|"
        f"{json.dumps(training, sort_keys=True)}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def allowed_labels(class_ids: Sequence[int], num_labels: int) -> torch.Tensor:
    """Bool ``[num_labels]``: background and the image's classes."""
    allowed = torch.zeros(num_labels, dtype=torch.bool)
    allowed[0] = True
    allowed[[c + 1 for c in class_ids]] = True
    return allowed


@dataclass
class TrainingExample:
    levels: list[torch.Tensor]  # float16 feature pyramid of one image
    labels: torch.Tensor  # int64 [h, w] on the grid: 0 background, c + 1 class c, IGNORED
    allowed: torch.Tensor  # bool [num_labels]


def training_example(
    backbone: nn.Module,
    image: np.ndarray,
    labels: np.ndarray,
    class_ids: Sequence[int],
    num_labels: int,
    input_side: int,
    max_upscale: float | None = None,
) -> TrainingExample:
    """An image's features and its first-pass mask (label values) on the head's grid."""
    net = network_input(image, input_side, max_upscale)
    with torch.no_grad():
        levels = [level.half() for level in feature_pyramid(backbone, net.tensor)]
    full = torch.from_numpy(labels.astype(np.int64))[None, None].float()
    grid = F.interpolate(full, size=net.grid, mode="nearest")[0, 0].long()
    grid[grid == UNKNOWN] = IGNORED
    return TrainingExample(levels, grid, allowed_labels(class_ids, num_labels))


def train_segmentation_head(
    examples: Sequence[TrainingExample],
    num_labels: int,
    settings: SelfTrainingConfig,
    progress: Progress | None = None,
) -> tuple[SegmentationHead, float]:
    """Train a head on ``examples``; returns it (eval mode) and the seconds it took."""
    if not examples:
        raise ValueError("no labelled image to train the self-training head on")
    started = time.perf_counter()
    say = progress or (lambda _: None)
    torch.manual_seed(settings.seed)
    channels = [level.shape[1] for level in examples[0].levels]
    head = training_layout(SegmentationHead(channels, num_labels, settings.width))
    optimiser = torch.optim.Adam(
        head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    groups = grid_groups([tuple(example.labels.shape) for example in examples])
    rng = np.random.default_rng(settings.seed)
    average = WeightAverage(head)
    averaged_from = max(0, settings.epochs - settings.average_epochs)
    for epoch in range(settings.epochs):
        batches = epoch_batches(groups, settings.batch_size, rng)
        total = 0.0
        for grid, members in batches:
            if all(bool((examples[i].labels == IGNORED).all()) for i in members):
                continue  # no known cell: no loss (cross-entropy would be NaN)
            levels = stacked_levels([examples[i].levels for i in members])
            allowed = torch.stack([examples[i].allowed for i in members])[:, :, None, None]
            logits = head(levels, (grid[0], grid[1])).masked_fill(~allowed, RULED_OUT)
            labels = torch.stack([examples[i].labels for i in members])
            loss = F.cross_entropy(logits, labels, ignore_index=IGNORED)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if epoch >= averaged_from:
                average.add(head)
            total += loss.item()
        mean_loss = total / len(batches)
        say(f"self-training head: epoch {epoch + 1}/{settings.epochs} loss {mean_loss:.4f}")
    average.load_into(head)
    return trained_layout(head), time.perf_counter() - started


class WeightAverage:
    """The running mean of a head's weights over the optimiser steps it is given.

    A mean of the iterates of a constant learning rate (stochastic weight
    averaging, Izmailov et al. 2018) lands nearer the middle of the region the
    steps wander in than the last step does, so the head depends less on where
    its last batches happened to leave it.
    """

    def __init__(self, head: nn.Module) -> None:
        self.count = 0
        self.means = {name: torch.zeros_like(p) for name, p in head.named_parameters()}

    def add(self, head: nn.Module) -> None:
        self.count += 1
        with torch.no_grad():
            for name, parameter in head.named_parameters():
                self.means[name] += (parameter - self.means[name]) / self.count

    def load_into(self, head: nn.Module) -> None:
        """``head``'s weights become the mean (unchanged when no step was added)."""
        if not self.count:
            return
        with torch.no_grad():
            for name, parameter in head.named_parameters():
                parameter.copy_(self.means[name])


def head_probabilities(
    head: SegmentationHead,
    backbone: nn.Module,
    image: np.ndarray,
    class_ids: Sequence[int],
    input_side: int,
    max_upscale: float | None = None,
    scales: Sequence[float] = (1.0,),
) -> np.ndarray:
    """Background + ``class_ids`` probabilities ``float32 [K + 1, H, W]`` at the image's size.

    ``scales``: the image is read at each multiple of its input size (``input_side``
    and ``max_upscale`` both scaled) and the probabilities are averaged.
    """
    allowed = allowed_labels(class_ids, head.num_labels)[None, :, None, None]
    total = torch.zeros(head.num_labels, *image.shape[:2])
    for scale in scales:
        upscale = None if max_upscale is None else max_upscale * scale
        net = network_input(image, max(1, round(input_side * scale)), upscale)
        with torch.no_grad():
            logits = head(feature_pyramid(backbone, net.tensor), net.grid)
            logits = logits.masked_fill(~allowed, RULED_OUT)
            full = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
            total += full.softmax(dim=1)[0]
    channels = [0, *(c + 1 for c in class_ids)]
    return (total[channels] / len(scales)).numpy().astype(np.float32)


def mixed_probabilities(
    head_probs: np.ndarray, labels: np.ndarray, class_ids: Sequence[int], head_weight: float
) -> np.ndarray:
    """``head_weight`` x the head's probabilities + the rest x the first-pass mask, one-hot.

    An unknown (255) first-pass pixel gives its share evenly to every channel.
    """
    channels = label_channels(labels, class_ids, "first-pass labels")
    count = head_probs.shape[0]
    one_hot = np.zeros_like(head_probs)
    known = channels >= 0
    rows, cols = np.nonzero(known)
    one_hot[channels[known], rows, cols] = 1.0
    one_hot[:, ~known] = 1.0 / count
    mixed = head_weight * head_probs + (1.0 - head_weight) * one_hot
    return (mixed / mixed.sum(axis=0, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class LoadedSegmentationHead:
    head: SegmentationHead
    lineage: str
    images: int  # training images
    seconds: float  # training time, features included


def save_segmentation_head(
    path: Path, head: SegmentationHead, lineage: str, images: int, seconds: float
) -> None:
    shape = {
        "level_channels": list(head.level_channels),
        "num_labels": head.num_labels,
        "width": head.width,
    }
    save_head_file(path, HEAD_FORMAT, head, shape, lineage=lineage, images=images, seconds=seconds)


def head_path(workspace: Workspace, config: PipelineConfig, classifier_hash: str) -> Path:
    return workspace.segmentation_head_path(head_lineage(config, classifier_hash))


def load_segmentation_head(path: Path) -> LoadedSegmentationHead:
    """A head written by :func:`save_segmentation_head`, in eval mode; else a clear error."""
    payload = read_head_file(path, HEAD_FORMAT, "self-training head")
    head = SegmentationHead(payload["level_channels"], payload["num_labels"], payload["width"])
    head.load_state_dict(payload["state_dict"])
    return LoadedSegmentationHead(
        head.eval(), payload["lineage"], payload["images"], payload["seconds"]
    )
