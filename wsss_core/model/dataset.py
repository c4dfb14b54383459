"""The manifest's labelled images as training samples: which rows train and validate, and targets.

Training uses the ``train`` split's labelled rows and validates on the ``val``
split's (on the training rows, with a warning, when there are none); unlabelled
rows only get maps.

An image that passed ingest but cannot be decoded now (truncated or replaced
since, deleted) is left out with one warning naming its file, instead of
killing the run mid-epoch. Every image is decoded once before the first epoch
to find them, so the samples, their order and the seeds are fixed before
training starts (with or without loader workers) and each is named once, not
once per epoch. Errors that are not the file's (out of memory, a bug) propagate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from wsss_core.data.images import is_decode_error, load_rgb
from wsss_core.data.manifest import ImageRecord, Manifest

MAX_CHECK_THREADS = 8  # Pillow decodes without the GIL


class UnreadableImage(OSError):
    """An image file that does not decode (missing, truncated, corrupt); the message names it."""


def load_training_image(uri: str) -> np.ndarray:
    """``load_rgb(uri)``; a file at fault raises :class:`UnreadableImage` naming it."""
    try:
        return load_rgb(uri)
    except Exception as error:
        if not is_decode_error(error):
            raise
        raise UnreadableImage(f"{uri}: cannot decode ({type(error).__name__}: {error})") from error


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
        # A file that breaks after training_records checked it stops the run, naming the
        # file; the next run's check leaves it out.
        image = torch.from_numpy(load_training_image(record.uri)).permute(2, 0, 1)
        target = torch.zeros(self.num_classes)
        target[list(record.labels)] = 1.0
        return self.transform(image), target


@dataclass(frozen=True)
class TrainingRows:
    train: list[ImageRecord]
    val: list[ImageRecord]  # the train rows when no labelled val row can be read
    skipped: dict[str, str]  # image id -> its file and why it cannot be read


def _decode_problem(record: ImageRecord) -> str | None:
    try:
        load_training_image(record.uri)
    except UnreadableImage as error:
        return str(error)
    return None


def unreadable_images(records: Sequence[ImageRecord]) -> dict[str, str]:
    """Image id -> the file and why, for the records whose image does not decode (input order)."""
    threads = max(1, min(MAX_CHECK_THREADS, os.cpu_count() or 1, len(records)))
    with ThreadPoolExecutor(threads) as pool:
        problems = list(pool.map(_decode_problem, records))
    return {
        record.image_id: problem
        for record, problem in zip(records, problems, strict=True)
        if problem is not None
    }


def training_records(manifest: Manifest, log: Callable[[str], None]) -> TrainingRows:
    """The labelled ``train`` and ``val`` rows that decode; a clear error when nothing can train."""
    train = manifest.split("train")
    labelled = [r for r in train if r.labels]
    if not labelled:
        splits = sorted({r.split for r in manifest.records})
        raise ValueError(
            "the manifest's train split has no labelled image; nothing to train on "
            f"({len(train)} train image(s); splits present: {splits or 'none'})"
        )
    if len(labelled) < len(train):
        log(f"{len(train) - len(labelled)} train image(s) without labels left out")
    labelled_val = [r for r in manifest.split("val") if r.labels]
    skipped = unreadable_images([*labelled, *labelled_val])
    for problem in skipped.values():
        log(f"warning: unreadable image left out of training: {problem}")
    train_records = [r for r in labelled if r.image_id not in skipped]
    if not train_records:
        raise ValueError(
            f"none of the {len(labelled)} labelled train images can be read, e.g. "
            f"{next(iter(skipped.values()))}; re-ingest the source (`wsss ingest`)"
        )
    val_records = [r for r in labelled_val if r.image_id not in skipped]
    if not val_records:
        log("warning: no labelled 'val' images: validating on the training split (optimistic)")
        val_records = train_records
    return TrainingRows(train_records, val_records, skipped)


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
