"""Segmentation and classification metrics (numpy only).

Segmentation works on label maps (see ARCHITECTURE.md): ``0`` background,
``k + 1`` class id ``k``, ``255`` ignore / unknown. ``num_labels`` counts the
label values in use, background included (``C + 1`` for ``C`` classes).

A pseudo-label map may leave pixels unknown (255). Those are neither right nor
any class's false positive, so the confusion matrix keeps them in an extra
last column: they cost the ground-truth class recall (false negatives), lower
pixel accuracy and show up in :meth:`ConfusionMatrix.coverage`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE = 255


def _check_label_map(name: str, values: np.ndarray, num_labels: int) -> None:
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label map, got dtype {values.dtype}")
    bad = (values != IGNORE) & ((values < 0) | (values >= num_labels))
    if bad.any():
        example = int(values[bad].flat[0])
        raise ValueError(
            f"{name} holds value {example}: label maps may hold 0..{num_labels - 1} or {IGNORE}"
        )


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_labels: int) -> np.ndarray:
    """Pixel counts int64 ``[num_labels, num_labels + 1]``: rows gt, columns pred.

    Pixels whose gt is 255 are skipped; a pred of 255 is counted in the last
    column ("unknown").
    """
    if not 1 <= num_labels < IGNORE:
        raise ValueError(f"num_labels must be in 1..{IGNORE - 1}, got {num_labels}")
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} differs from pred shape {pred.shape}")
    _check_label_map("gt", gt, num_labels)
    _check_label_map("pred", pred, num_labels)
    valid = gt != IGNORE
    rows = gt[valid].astype(np.int64)
    cols = pred[valid].astype(np.int64)
    cols[cols == IGNORE] = num_labels
    width = num_labels + 1
    counts = np.bincount(rows * width + cols, minlength=num_labels * width)
    return counts.reshape(num_labels, width)


def iou_per_label(counts: np.ndarray) -> np.ndarray:
    """IoU per label of confusion counts ``[..., L, L + 1]`` (last column: unknown).

    NaN for labels absent from gt and pred. Any leading axes are kept, so a
    stack of resampled confusions is scored at once (``tuning/scores.py``).
    """
    labels = counts.shape[-2]
    known = counts[..., :labels]
    true_positive = np.diagonal(known, axis1=-2, axis2=-1).astype(np.float64)
    gt_total = counts.sum(axis=-1)  # includes unknown predictions: misses
    union = gt_total + known.sum(axis=-2) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def mean_iou(counts: np.ndarray) -> np.ndarray:
    """Mean IoU over the labels present in the ground truth (NaN when none are).

    A label predicted but absent from the gt has IoU 0 in :func:`iou_per_label`
    but is left out here, as in the usual mIoU over a dataset where every class
    occurs. Leading axes as in :func:`iou_per_label`.
    """
    present = counts.sum(axis=-1) > 0
    iou = np.where(present, iou_per_label(counts), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present.any(axis=-1), iou.sum(axis=-1) / present.sum(axis=-1), np.nan)


class ConfusionMatrix:
    """Accumulates a :func:`confusion_matrix` over images and derives scores from it.

    Scores that have no pixels to be computed from are NaN rather than 0, so an
    empty evaluation is never mistaken for a bad one.
    """

    def __init__(self, num_labels: int) -> None:
        if not 1 <= num_labels < IGNORE:
            raise ValueError(f"num_labels must be in 1..{IGNORE - 1}, got {num_labels}")
        self.num_labels = num_labels
        self._counts = np.zeros((num_labels, num_labels + 1), np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image (or any batch of pixels of matching shape)."""
        self._counts += confusion_matrix(gt, pred, self.num_labels)

    @property
    def matrix(self) -> np.ndarray:
        """Copy of the counts ``[num_labels, num_labels + 1]``, last column = unknown."""
        return self._counts.copy()

    @property
    def num_pixels(self) -> int:
        """Evaluated pixels: ground truth not ignored."""
        return int(self._counts.sum())

    def iou_per_class(self) -> np.ndarray:
        """IoU per label value ``[num_labels]``; NaN for labels absent from gt and pred."""
        return iou_per_label(self._counts)

    def mean_iou(self) -> float:
        """Mean IoU over the labels present in the ground truth (see :func:`mean_iou`)."""
        return float(mean_iou(self._counts))

    def pixel_accuracy(self) -> float:
        """Share of evaluated pixels predicted correctly; unknown counts as wrong."""
        total = self.num_pixels
        return float(np.trace(self._counts[:, : self.num_labels]) / total) if total else np.nan

    def coverage(self) -> float:
        """Share of evaluated pixels with a prediction other than 255."""
        total = self.num_pixels
        return float(1.0 - self._counts[:, -1].sum() / total) if total else np.nan


class ObjectCoverage:
    """Where the ground truth's pixels went, for choosing a method (``wsss compare``).

    mIoU hides *how* a mask is wrong; these shares say it (NaN without pixels
    or images to compute them from):

    - :attr:`fg_recall`: ground-truth object pixels given their true class;
    - :attr:`fg_wrong_class`: ground-truth object pixels given another object class
      (the rest went to background or stayed unknown: a 255 prediction is
      neither kept nor wrong);
    - :attr:`bg_to_fg`: ground-truth background pixels given some class;
    - :attr:`emptied`: images with a labelled class whose prediction holds no
      pixel of any of their labelled classes, as a share of the images scored.

    Ground truth 255 is ignored, as in :class:`ConfusionMatrix`.
    """

    def __init__(self, num_labels: int) -> None:
        if not 1 <= num_labels < IGNORE:
            raise ValueError(f"num_labels must be in 1..{IGNORE - 1}, got {num_labels}")
        self.num_labels = num_labels
        self._counts = np.zeros((num_labels, num_labels + 1), np.int64)
        self.images = 0
        self.emptied_images = 0

    def update(self, gt: np.ndarray, prediction: np.ndarray, labels: Sequence[int]) -> None:
        """Add one image; ``labels``: its image-level class ids (label value ``k + 1``)."""
        values = [int(label) + 1 for label in labels]
        if any(not 1 <= value < self.num_labels for value in values):
            raise ValueError(
                f"labels {list(labels)} hold a class id outside 0..{self.num_labels - 2}"
            )
        self._counts += confusion_matrix(gt, prediction, self.num_labels)
        self.images += 1
        if values and not np.isin(np.asarray(prediction), values).any():
            self.emptied_images += 1

    def _objects(self) -> np.ndarray:
        """Counts of the ground-truth object rows (background row 0 left out)."""
        return self._counts[1:]

    @property
    def fg_recall(self) -> float:
        objects = self._objects()
        kept = np.trace(objects[:, 1 : self.num_labels])  # row k, column k + 1: the true class
        return _share(kept, objects.sum())

    @property
    def fg_wrong_class(self) -> float:
        objects = self._objects()
        as_objects = objects[:, 1 : self.num_labels]
        return _share(as_objects.sum() - np.trace(as_objects), objects.sum())

    @property
    def bg_to_fg(self) -> float:
        background = self._counts[0]
        return _share(background[1 : self.num_labels].sum(), background.sum())

    @property
    def emptied(self) -> float:
        return _share(self.emptied_images, self.images)


def _share(part: int | np.integer, total: int | np.integer) -> float:
    return float(part / total) if total else float("nan")


def _check_scores(scores: np.ndarray, targets: np.ndarray, ndim: int) -> None:
    if scores.shape != targets.shape:
        raise ValueError(f"scores shape {scores.shape} differs from targets shape {targets.shape}")
    if scores.ndim != ndim or scores.shape[0] == 0:
        raise ValueError(f"expected a non-empty {ndim}-D array, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("targets must be binary (0/1 or bool)")


def _average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], targets[order].astype(np.float64)
    positives = hits.sum()
    if positives == 0:
        return float("nan")
    # One operating point per distinct score: tied items enter the ranking
    # together, so their order cannot change the result (as in sklearn).
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positive = np.cumsum(hits)[last_of_tie]
    precision = true_positive / (last_of_tie + 1)
    recall_gain = np.diff(np.r_[0.0, true_positive]) / positives
    return float(np.sum(recall_gain * precision))


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Ranking AP of one class, as ``sklearn.metrics.average_precision_score``.

    ``sum_n (R_n - R_{n-1}) * P_n`` over score thresholds, highest first. NaN
    when there is no positive (AP is undefined there).
    """
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets)
    _check_scores(scores, targets, ndim=1)
    return _average_precision(scores, targets)


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """(mAP, per-class AP ``[C]``) for ``[N, C]`` scores and binary targets.

    Per-class AP is NaN for classes without a positive; the mean skips them
    (NaN when no class has a positive).
    """
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets)
    _check_scores(scores, targets, ndim=2)
    per_class = np.array(
        [_average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    )
    defined = ~np.isnan(per_class)
    mean = float(per_class[defined].mean()) if defined.any() else float("nan")
    return mean, per_class
