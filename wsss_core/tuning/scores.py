"""Per-image confusion matrices, and mIoU with a bootstrap interval over images.

The figure is the dataset-level mIoU (confusions summed over images, as
``wsss eval``), so the interval resamples images, not pixels: images are the
units a user adds or loses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from wsss_core.data.images import load_label_map
from wsss_core.metrics import confusion_matrix, iou_per_label, mean_iou

RESAMPLES = 1000
LEVEL = 0.9  # a 90% interval: two-sided 5% tails


@dataclass(frozen=True)
class ImageScores:
    """One confusion matrix per image ``[N, L, L + 1]`` (last column: unknown predictions)."""

    image_ids: tuple[str, ...]
    matrices: np.ndarray

    def subset(self, image_ids: Sequence[str]) -> ImageScores:
        index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        rows = [index[image_id] for image_id in image_ids]
        return ImageScores(tuple(image_ids), self.matrices[rows])


@dataclass(frozen=True)
class Estimate:
    """mIoU over a set of images with its bootstrap interval, and IoU per label."""

    miou: float
    low: float
    high: float
    images: int
    iou_per_label: tuple[float, ...]  # NaN for labels absent from the truth

    def describe(self) -> str:
        return (
            f"{self.miou:.3f} [{self.low:.3f}, {self.high:.3f}] "
            f"({LEVEL:.0%} interval, {self.images} image(s))"
        )


def score_images(
    predictions: Iterable[tuple[str, np.ndarray]], truth: Mapping[str, str], num_labels: int
) -> ImageScores:
    """Confusions of the predicted images that have a true mask (``truth``: id -> PNG)."""
    ids, matrices = [], []
    for image_id, prediction in predictions:
        path = truth.get(image_id)
        if path is None:
            continue
        ids.append(image_id)
        matrices.append(confusion_matrix(load_label_map(path), prediction, num_labels))
    shape = (0, num_labels, num_labels + 1)
    return ImageScores(tuple(ids), np.stack(matrices) if matrices else np.zeros(shape, np.int64))


def _bootstrap_weights(count: int, seed: int, resamples: int) -> np.ndarray:
    """How often each image is drawn in each resample ``[resamples, count]``."""
    draws = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    weights = np.zeros((resamples, count), np.int64)
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1)
    return weights


def _resampled_miou(scores: ImageScores, weights: np.ndarray) -> np.ndarray:
    count = len(scores.image_ids)
    summed = weights @ scores.matrices.reshape(count, -1)
    return mean_iou(summed.reshape(len(weights), *scores.matrices.shape[1:]))


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2
    low, high = np.nanquantile(values, [tail, 1 - tail])
    return float(low), float(high)


def estimate(scores: ImageScores, seed: int = 0, resamples: int = RESAMPLES) -> Estimate:
    """mIoU of ``scores`` with a seeded percentile bootstrap over its images."""
    total = scores.matrices.sum(axis=0)
    per_label = tuple(float(v) for v in iou_per_label(total))
    count = len(scores.image_ids)
    if count == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, per_label)
    weights = _bootstrap_weights(count, seed, resamples)
    low, high = _interval(_resampled_miou(scores, weights))
    return Estimate(float(mean_iou(total)), low, high, count, per_label)


def paired_gain(
    tuned: ImageScores, default: ImageScores, seed: int = 0, resamples: int = RESAMPLES
) -> Estimate:
    """Tuned minus default mIoU on the same images, with a paired bootstrap interval."""
    if tuned.image_ids != default.image_ids:
        raise ValueError("the two scores must cover the same images in the same order")
    count = len(tuned.image_ids)
    gain = float(mean_iou(tuned.matrices.sum(0)) - mean_iou(default.matrices.sum(0)))
    if count == 0:
        return Estimate(gain, gain, gain, 0, ())
    weights = _bootstrap_weights(count, seed, resamples)
    low, high = _interval(_resampled_miou(tuned, weights) - _resampled_miou(default, weights))
    return Estimate(gain, low, high, count, ())


def gain_confidence(
    candidate: ImageScores, incumbent: ImageScores, seed: int = 0, resamples: int = RESAMPLES
) -> float:
    """The share of paired resamples of the images in which ``candidate`` beats ``incumbent``."""
    if candidate.image_ids != incumbent.image_ids:
        raise ValueError("the two scores must cover the same images in the same order")
    if not candidate.image_ids:
        return 0.0
    weights = _bootstrap_weights(len(candidate.image_ids), seed, resamples)
    gains = _resampled_miou(candidate, weights) - _resampled_miou(incumbent, weights)
    return float(np.mean(gains > 0))
