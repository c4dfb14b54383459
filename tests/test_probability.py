"""Tests for wsss_core.probability: background from low CAM, anchoring labelled pixels."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_core.probability import anchor_probabilities, probability_map


def _cams(seed: int = 0, k: int = 3, h: int = 16, w: int = 20) -> np.ndarray:
    cams = np.random.default_rng(seed).random((k, h, w)).astype(np.float32)
    return cams / cams.max(axis=(1, 2), keepdims=True)


def test_probability_map_is_float32_and_sums_to_one() -> None:
    probs = probability_map(_cams())
    assert probs.shape == (4, 16, 20)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-6)
    assert probs.min() >= 0


def test_background_high_where_cams_low_and_low_where_a_cam_peaks() -> None:
    cams = np.zeros((2, 4, 4), dtype=np.float32)
    cams[0, 0, 0] = 1.0
    cams[1, 3, 3] = 0.5
    probs = probability_map(cams)
    assert probs[0, 1, 1] == pytest.approx(1.0)  # all CAMs zero
    assert probs[0, 0, 0] == pytest.approx(0.0)  # a CAM at its maximum
    assert probs[1, 0, 0] == pytest.approx(1.0)
    # One class at 0.5 with power 1: P_fg = m, P_bg = 1 - m.
    assert probs[2, 3, 3] == pytest.approx(0.5)
    assert probs[0, 3, 3] == pytest.approx(0.5)


def test_background_power_shifts_mass_to_foreground() -> None:
    cams = np.full((1, 2, 2), 0.5, dtype=np.float32)
    weak = probability_map(cams, background_power=1.0)
    strong = probability_map(cams, background_power=4.0)
    assert strong[1, 0, 0] > weak[1, 0, 0]
    assert strong[0, 0, 0] == pytest.approx(0.0625 / 0.5625)


def test_no_classes_gives_all_background() -> None:
    probs = probability_map(np.zeros((0, 5, 7), dtype=np.float32))
    assert probs.shape == (1, 5, 7)
    np.testing.assert_array_equal(probs, 1.0)


def test_cams_outside_unit_range_are_clipped() -> None:
    cams = np.array([[[-0.2, 1.3]]], dtype=np.float32)
    probs = probability_map(cams)
    np.testing.assert_allclose(probs[:, 0, 0], [1.0, 0.0])
    np.testing.assert_allclose(probs[:, 0, 1], [0.0, 1.0])


@pytest.mark.parametrize(
    ("cams", "power", "message"),
    [
        (np.zeros((4, 4), np.float32), 1.0, r"\[K, H, W\]"),
        (np.full((1, 2, 2), np.nan, np.float32), 1.0, "NaN"),
        (np.zeros((1, 2, 2), np.float32), -1.0, "background_power"),
    ],
)
def test_probability_map_rejects_bad_input(cams: np.ndarray, power: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        probability_map(cams, background_power=power)


def test_anchor_sets_confidence_on_labelled_pixels_and_keeps_unknown() -> None:
    probs = probability_map(_cams(k=2, h=3, w=3))
    labels = np.full((3, 3), 255, dtype=np.uint8)
    labels[0, 0] = 0
    labels[1, 1] = 8  # class id 7 -> channel 2
    out = anchor_probabilities(probs, labels, class_ids=[4, 7], confidence=0.8)
    np.testing.assert_allclose(out[:, 0, 0], [0.8, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(out[:, 1, 1], [0.1, 0.1, 0.8], atol=1e-6)
    unknown = labels == 255
    np.testing.assert_array_equal(out[:, unknown], probs[:, unknown])
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-6)
    assert out.dtype == np.float32


def test_anchor_does_not_modify_its_input() -> None:
    probs = probability_map(_cams(k=1, h=2, w=2))
    before = probs.copy()
    anchor_probabilities(probs, np.zeros((2, 2), np.uint8), [0])
    np.testing.assert_array_equal(probs, before)


def test_anchor_with_no_classes_is_all_background() -> None:
    probs = np.ones((1, 2, 2), dtype=np.float32)
    out = anchor_probabilities(probs, np.array([[0, 255], [0, 0]], np.uint8), [], 0.9)
    np.testing.assert_array_equal(out, 1.0)


def test_anchor_rejects_labels_of_absent_classes_and_bad_confidence() -> None:
    probs = probability_map(_cams(k=1, h=2, w=2))
    with pytest.raises(ValueError, match="not in class_ids"):
        anchor_probabilities(probs, np.full((2, 2), 3, np.uint8), [0])
    with pytest.raises(ValueError, match="confidence"):
        anchor_probabilities(probs, np.zeros((2, 2), np.uint8), [0], confidence=0.0)
    with pytest.raises(ValueError, match="does not match"):
        anchor_probabilities(probs, np.zeros((3, 2), np.uint8), [0])
    with pytest.raises(ValueError, match=r"K = len\(class_ids\) = 2"):
        anchor_probabilities(probs, np.zeros((2, 2), np.uint8), [0, 1])
