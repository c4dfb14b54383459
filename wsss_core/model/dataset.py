"""The manifest's labelled images as training samples: which rows train and validate, and targets.

Training uses the ``train`` split's labelled rows and validates on the ``val``
split's (on the training rows, with a warning, when there are none); unlabelled
rows only get maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from wsss_core.data.images import load_rgb
from wsss_core.data.manifest import ImageRecord, Manifest


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


def training_records(
    manifest: Manifest, log: Callable[[str], None]
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """The labelled ``train`` and ``val`` rows; a clear error when nothing can train."""
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


def warn_about_classes(
    class_names: Sequence[str],
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    log: Callable[[str], None],
) -> None:
    """Say which classes cannot be learnt (no positive) or scored (no positive in val)."""
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
