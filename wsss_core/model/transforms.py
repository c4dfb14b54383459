"""Pixels to network input: ImageNet normalisation, training augmentation, evaluation resize.

One definition for training, the CAM stage and the affinity head, so inference
feeds the network images normalised exactly as training did.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from wsss_core.config import TrainConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize() -> v2.Normalize:
    return v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8 [H, W, 3]`` to a normalised ``float32 [3, H, W]`` tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return normalize()(v2.functional.to_dtype(tensor, torch.float32, scale=True))


def train_transform(config: TrainConfig) -> v2.Transform:
    """Random resized crop, optional flip, colour jitter (``config.image_size`` resolved)."""
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
    """The whole image resized to the square training side: what validation scores."""
    return v2.Compose(
        [
            v2.Resize((config.image_size, config.image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            normalize(),
        ]
    )
