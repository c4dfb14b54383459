"""How big a training run is, when the config leaves it open: image side, epochs, loader workers.

Chosen from the training images and the device, so a default config trains a
few hundred small images and a few thousand large ones in minutes, not hours
(ARCHITECTURE.md, "Decisions"). The checkpoint records the values chosen; the
lineage hashes the config as given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from wsss_core.config import TrainConfig
from wsss_core.data.manifest import ImageRecord

MIN_AUTO_SIDE = 128  # pretrained backbones want some context; small images are upscaled
MAX_AUTO_SIDE = {"cpu": 256, "cuda": 448}  # the cost of a pass grows with the side squared
TARGET_STEPS = {"cpu": 150, "cuda": 600}  # optimiser steps a run aims at
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 3, 40
# On CPU, cap the work at this many image passes counted at 128 px (a few minutes on 2 cores).
CPU_BUDGET_IMAGES_128 = 12000
MAX_LOADER_WORKERS = 8


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


def loader_workers(config: TrainConfig, device: torch.device) -> int:
    """``train.num_workers`` as given; unset, decoding processes only where a GPU waits on them."""
    if config.num_workers is not None:
        return config.num_workers
    if device.type != "cuda":
        return 0  # decoding small images costs little next to a CPU forward/backward
    return max(0, min(MAX_LOADER_WORKERS, (os.cpu_count() or 1) - 1))
