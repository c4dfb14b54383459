"""Tests for segmentation (confusion matrix, IoU) and ranking (AP) metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from wsss_core.metrics import (
    ConfusionMatrix,
    ObjectCoverage,
    average_precision,
    confusion_matrix,
    mean_average_precision,
)

# Labels: 0 background, 1 and 2 two classes, 255 ignore / unknown.
GT = np.array([[0, 0, 1, 1], [0, 2, 2, 255]], np.uint8)
PRED = np.array([[0, 1, 1, 1], [0, 2, 255, 0]], np.uint8)


def test_confusion_matrix_by_hand() -> None:
    # The gt-255 pixel is dropped; the (gt 2, pred 255) pixel lands in the unknown column.
    expected = np.array(
        [
            # pred: 0  1  2  unknown
            [2, 1, 0, 0],  # gt 0
            [0, 2, 0, 0],  # gt 1
            [0, 0, 1, 1],  # gt 2
        ]
    )
    result = confusion_matrix(GT, PRED, num_labels=3)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, expected)


def test_scores_by_hand() -> None:
    metric = ConfusionMatrix(num_labels=3)
    metric.update(GT, PRED)
    # IoU = TP / (TP + FP + FN):
    #   label 0: TP 2, FP 0, FN 1 (pred 1)        -> 2 / 3
    #   label 1: TP 2, FP 1 (a gt-0 pixel), FN 0  -> 2 / 3
    #   label 2: TP 1, FP 0, FN 1 (unknown pred)  -> 1 / 2
    np.testing.assert_allclose(metric.iou_per_class(), [2 / 3, 2 / 3, 1 / 2])
    # mIoU = (2/3 + 2/3 + 1/2) / 3 = (11/6) / 3 = 11/18
    assert metric.mean_iou() == pytest.approx(11 / 18)
    # 7 evaluated pixels (8 minus the ignored one), 5 correct, 1 unknown.
    assert metric.num_pixels == 7
    assert metric.pixel_accuracy() == pytest.approx(5 / 7)
    assert metric.coverage() == pytest.approx(6 / 7)


def test_labels_absent_everywhere_are_nan_and_excluded() -> None:
    metric = ConfusionMatrix(num_labels=5)
    metric.update(GT, PRED)
    iou = metric.iou_per_class()
    assert math.isnan(iou[3]) and math.isnan(iou[4])
    assert metric.mean_iou() == pytest.approx(11 / 18)


def test_false_positive_only_label_scores_zero_but_not_in_mean() -> None:
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 2, 1, 1]], np.uint8)
    metric = ConfusionMatrix(num_labels=3)
    metric.update(gt, pred)
    # label 0: 1 / 2, label 1: 2 / 2, label 2: 0 / 1 (absent from gt -> out of the mean)
    np.testing.assert_allclose(metric.iou_per_class(), [0.5, 1.0, 0.0])
    assert metric.mean_iou() == pytest.approx(0.75)


def test_ignored_gt_is_never_counted() -> None:
    gt = np.full((3, 3), 255, np.uint8)
    pred = np.array([[0, 1, 255]] * 3, np.uint8)
    metric = ConfusionMatrix(num_labels=2)
    metric.update(gt, pred)
    assert metric.num_pixels == 0
    assert np.isnan(metric.iou_per_class()).all()
    for score in (metric.mean_iou(), metric.pixel_accuracy(), metric.coverage()):
        assert math.isnan(score)


def test_unknown_predictions_are_misses_not_false_positives() -> None:
    gt = np.array([[1, 1, 1, 0]], np.uint8)
    pred = np.array([[1, 255, 255, 0]], np.uint8)
    metric = ConfusionMatrix(num_labels=2)
    metric.update(gt, pred)
    # label 1: TP 1, FN 2 -> 1/3; label 0 untouched by the unknowns -> 1/1
    np.testing.assert_allclose(metric.iou_per_class(), [1.0, 1 / 3])
    assert metric.pixel_accuracy() == pytest.approx(2 / 4)
    assert metric.coverage() == pytest.approx(2 / 4)
    assert metric.matrix[:, -1].tolist() == [0, 2]


def test_accumulating_two_images_equals_one_concatenated_image() -> None:
    rng = np.random.default_rng(0)
    values = np.array([0, 1, 2, 3, 255], np.uint8)
    first_gt, first_pred = rng.choice(values, (2, 12, 9))
    second_gt, second_pred = rng.choice(values, (2, 7, 9))
    accumulated = ConfusionMatrix(num_labels=4)
    accumulated.update(first_gt, first_pred)
    accumulated.update(second_gt, second_pred)
    whole_gt = np.concatenate([first_gt, second_gt])
    whole = ConfusionMatrix(num_labels=4)
    whole.update(whole_gt, np.concatenate([first_pred, second_pred]))
    np.testing.assert_array_equal(accumulated.matrix, whole.matrix)
    assert accumulated.mean_iou() == pytest.approx(whole.mean_iou())
    assert accumulated.num_pixels == int((whole_gt != 255).sum())


def test_matrix_is_a_copy() -> None:
    metric = ConfusionMatrix(num_labels=3)
    metric.update(GT, PRED)
    metric.matrix[:] = 0
    assert metric.num_pixels == 7


@pytest.mark.parametrize(
    ("gt", "pred", "message"),
    [
        (np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), "shape"),
        (np.full((2, 2), 3, np.uint8), np.zeros((2, 2), np.uint8), "gt holds value 3"),
        (np.zeros((2, 2), np.uint8), np.full((2, 2), 254, np.uint8), "pred holds value 254"),
        (np.zeros((2, 2), np.int32), np.full((2, 2), -1, np.int32), "pred holds value -1"),
        (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), "integer"),
    ],
)
def test_bad_label_maps_raise(gt: np.ndarray, pred: np.ndarray, message: str) -> None:
    metric = ConfusionMatrix(num_labels=3)
    with pytest.raises(ValueError, match=message):
        metric.update(gt, pred)
    assert metric.num_pixels == 0, "a rejected update leaves the counts untouched"


def test_invalid_value_under_ignored_gt_still_raises() -> None:
    gt = np.array([[255, 0]], np.uint8)
    pred = np.array([[7, 0]], np.uint8)
    with pytest.raises(ValueError, match="pred holds value 7"):
        confusion_matrix(gt, pred, num_labels=3)


@pytest.mark.parametrize("num_labels", [0, 255])
def test_bad_num_labels(num_labels: int) -> None:
    with pytest.raises(ValueError, match="num_labels"):
        ConfusionMatrix(num_labels)


def test_average_precision_by_hand() -> None:
    # Ranking: +, -, +, -. Positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2 = 5/6.
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == (
        pytest.approx(5 / 6)
    )
    # Perfect ranking -> 1; single positive ranked last of 4 -> 1/4.
    assert average_precision(np.array([0.9, 0.1, 0.2]), np.array([1, 0, 0])) == 1.0
    assert average_precision(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 0, 0, 0])) == (
        pytest.approx(0.25)
    )


def test_average_precision_ties_enter_together() -> None:
    # Scores 0.5, 0.5 (one +, one -) then 0.2 (+).
    #   threshold 0.5: precision 1/2, recall 1/2;  threshold 0.2: precision 2/3, recall 1
    #   AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12, whichever tied item is listed first.
    for targets in ([1, 0, 1], [0, 1, 1]):
        assert average_precision(np.array([0.5, 0.5, 0.2]), np.array(targets)) == (
            pytest.approx(7 / 12)
        )


def test_average_precision_without_positive_is_nan() -> None:
    assert math.isnan(average_precision(np.array([0.3, 0.1]), np.array([0, 0])))


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, 200)
    targets[0] = 1
    scores = rng.random(200)
    scores[::7] = np.round(scores[::7], 1)  # force ties
    assert average_precision(scores, targets) == pytest.approx(
        average_precision_score(targets, scores)
    )
    bools = targets.astype(bool)
    assert average_precision(scores, bools) == pytest.approx(average_precision_score(bools, scores))


def test_mean_average_precision() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random((50, 4))
    targets = (rng.random((50, 4)) < 0.3).astype(int)
    targets[:, 2] = 0  # a class with no positive
    mean, per_class = mean_average_precision(scores, targets)
    assert per_class.shape == (4,)
    assert math.isnan(per_class[2])
    for c in (0, 1, 3):
        assert per_class[c] == pytest.approx(average_precision_score(targets[:, c], scores[:, c]))
    assert mean == pytest.approx(np.mean(per_class[[0, 1, 3]]))
    mean_empty, _ = mean_average_precision(scores, np.zeros_like(targets))
    assert math.isnan(mean_empty)


@pytest.mark.parametrize(
    ("scores", "targets", "message"),
    [
        (np.array([0.1, 0.2]), np.array([1, 0, 1]), "shape"),
        (np.array([]), np.array([]), "non-empty"),
        (np.array([0.1, np.nan]), np.array([1, 0]), "finite"),
        (np.array([0.1, 0.2]), np.array([2, 0]), "binary"),
        (np.array([[0.1, 0.2]]), np.array([[1, 0]]), "1-D"),
    ],
)
def test_average_precision_bad_input(scores: np.ndarray, targets: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        average_precision(scores, targets)


def test_mean_average_precision_needs_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        mean_average_precision(np.array([0.1, 0.2]), np.array([1, 0]))


def test_object_coverage_by_hand() -> None:
    coverage = ObjectCoverage(3)
    coverage.update(GT, PRED, labels=[0, 1])
    # Object pixels (gt 1 or 2, gt 255 ignored): 4; kept 3, the fourth unknown (255).
    assert coverage.fg_recall == pytest.approx(3 / 4)
    assert coverage.fg_wrong_class == 0.0
    # Background pixels: 3, one labelled class 1.
    assert coverage.bg_to_fg == pytest.approx(1 / 3)
    assert coverage.emptied == 0.0


def test_object_coverage_wrong_class_and_unknown() -> None:
    coverage = ObjectCoverage(3)
    gt = np.array([[1, 2, 2, 1]], np.uint8)
    coverage.update(gt, np.array([[2, 2, 255, 0]], np.uint8), labels=[0, 1])
    assert coverage.fg_recall == pytest.approx(1 / 4)
    assert coverage.fg_wrong_class == pytest.approx(1 / 4)  # the 255 is neither kept nor wrong
    assert math.isnan(coverage.bg_to_fg)  # no background pixel to lose


def test_object_coverage_emptied_images_share_of_scored_images() -> None:
    coverage = ObjectCoverage(3)
    gt = np.array([[0, 1]], np.uint8)
    coverage.update(gt, np.array([[0, 0]], np.uint8), labels=[0])  # emptied
    coverage.update(gt, np.array([[0, 2]], np.uint8), labels=[0])  # only a wrong class: emptied
    coverage.update(gt, np.array([[2, 0]], np.uint8), labels=[0, 1])  # class 1 kept somewhere
    coverage.update(gt, np.array([[0, 0]], np.uint8), labels=[])  # unlabelled: never emptied
    assert coverage.images == 4
    assert coverage.emptied == pytest.approx(2 / 4)


def test_object_coverage_ignores_gt_255_but_not_for_emptied() -> None:
    coverage = ObjectCoverage(2)
    gt = np.array([[255, 255]], np.uint8)
    coverage.update(gt, np.array([[1, 0]], np.uint8), labels=[0])
    assert math.isnan(coverage.fg_recall) and math.isnan(coverage.bg_to_fg)
    assert coverage.emptied == 0.0  # the mask holds the labelled class, under ignored gt


def test_object_coverage_without_images_is_nan() -> None:
    coverage = ObjectCoverage(3)
    for value in (coverage.fg_recall, coverage.fg_wrong_class, coverage.bg_to_fg):
        assert math.isnan(value)
    assert math.isnan(coverage.emptied)


def test_object_coverage_bad_input() -> None:
    coverage = ObjectCoverage(3)
    with pytest.raises(ValueError, match="class id"):
        coverage.update(GT, PRED, labels=[2])
    with pytest.raises(ValueError, match="pred holds value 7"):
        coverage.update(GT, np.full_like(PRED, 7), labels=[0])
    assert coverage.images == 0
