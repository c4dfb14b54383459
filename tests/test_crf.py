"""Tests for wsss_core.crf: dense CRF refinement (Kraehenbuehl & Koltun 2011)."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_core.crf import CrfParams, CrfResult, ImageCrf, refine_with_crf

SIZE = 64


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left half dark (background), right half bright (class); noisy image and probs.

    Returns (uint8 image [H, W, 3], probs [2, H, W], truth channel map [H, W]).
    """
    rng = np.random.default_rng(seed)
    truth = np.zeros((SIZE, SIZE), dtype=np.int64)
    truth[:, SIZE // 2 :] = 1
    grey = np.where(truth == 1, 190.0, 60.0) + rng.normal(0.0, 12.0, truth.shape)
    image = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    # 30 % of pixels get a confidently wrong distribution.
    flipped = rng.random(truth.shape) < 0.3
    noisy = np.where(flipped, 1 - truth, truth)
    p_fg = np.where(noisy == 1, 0.7, 0.3)
    probs = np.stack([1.0 - p_fg, p_fg]).astype(np.float32)
    return image, probs, truth


def test_crf_beats_noisy_argmax_clearly() -> None:
    image, probs, truth = _scene()
    noisy_accuracy = (probs.argmax(axis=0) == truth).mean()
    result = refine_with_crf(image, probs, class_ids=[0])
    crf_accuracy = ((result.labels == 1) == (truth == 1)).mean()
    assert isinstance(result, CrfResult)
    assert noisy_accuracy < 0.75
    assert crf_accuracy > 0.95
    assert crf_accuracy - noisy_accuracy > 0.2


def test_labels_map_channels_through_class_ids() -> None:
    image, probs, truth = _scene(seed=1)
    result = refine_with_crf(image, probs, class_ids=[14])
    assert result.labels.dtype == np.uint8
    assert result.labels.shape == (SIZE, SIZE)
    assert set(np.unique(result.labels)) <= {0, 15}
    assert ((result.labels == 15) == (truth == 1)).mean() > 0.95


def test_three_labels_map_to_their_class_ids() -> None:
    image = np.zeros((30, 30, 3), np.uint8)
    image[:, 10:20] = 120
    image[:, 20:] = 240
    probs = np.full((3, 30, 30), 0.1, np.float32)
    probs[0, :, :10] = probs[1, :, 10:20] = probs[2, :, 20:] = 0.8
    result = refine_with_crf(image, probs, class_ids=[7, 2])
    assert (result.labels[:, :10] == 0).all()
    assert (result.labels[:, 10:20] == 8).all()
    assert (result.labels[:, 20:] == 3).all()


def test_confidence_is_a_probability_and_min_confidence_marks_unknown() -> None:
    image, probs, _ = _scene(seed=2)
    result = refine_with_crf(image, probs, [0])
    assert result.confidence.dtype == np.float32
    assert result.confidence.shape == (SIZE, SIZE)
    assert result.confidence.min() >= 0.0 and result.confidence.max() <= 1.0
    cut = float(np.quantile(result.confidence, 0.25))
    gated = refine_with_crf(image, probs, [0], min_confidence=cut)
    low = result.confidence < cut
    assert low.any()
    assert (gated.labels[low] == 255).all()
    np.testing.assert_array_equal(gated.labels[~low], result.labels[~low])


def test_non_contiguous_and_float_inputs_work() -> None:
    image, probs, _ = _scene(seed=3)
    expected = refine_with_crf(image, probs, [0]).labels
    # Transposed views are not C-contiguous; transposing twice gives the same data.
    image_view = np.ascontiguousarray(image.transpose(1, 0, 2)).transpose(1, 0, 2)
    probs_view = np.ascontiguousarray(probs.transpose(0, 2, 1)).transpose(0, 2, 1)
    assert not image_view.flags.c_contiguous and not probs_view.flags.c_contiguous
    np.testing.assert_array_equal(refine_with_crf(image_view, probs_view, [0]).labels, expected)
    as_float = image.astype(np.float32) / 255.0
    np.testing.assert_array_equal(
        refine_with_crf(as_float, probs.astype(np.float64), [0]).labels, expected
    )
    np.testing.assert_array_equal(
        refine_with_crf(image.astype(np.int64), probs, [0]).labels, expected
    )


def test_single_label_is_all_background() -> None:
    result = refine_with_crf(np.zeros((4, 5, 3), np.uint8), np.ones((1, 4, 5), np.float32), [])
    np.testing.assert_array_equal(result.labels, 0)
    np.testing.assert_array_equal(result.confidence, 1.0)


@pytest.mark.parametrize(
    ("image", "probs", "class_ids", "message"),
    [
        (np.zeros((8, 8), np.uint8), np.ones((2, 8, 8), np.float32), [0], r"\[H, W, 3\]"),
        (np.zeros((8, 8, 4), np.uint8), np.ones((2, 8, 8), np.float32), [0], r"\[H, W, 3\]"),
        (np.zeros((8, 9, 3), np.uint8), np.ones((2, 8, 8), np.float32), [0], "does not match"),
        (np.zeros((8, 8, 3), np.uint8), np.ones((3, 8, 8), np.float32), [0], r"K = len"),
        (np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), np.nan, np.float32), [0], "NaN"),
        (np.zeros((8, 8, 3), np.uint8), -np.ones((2, 8, 8), np.float32), [0], "non-negative"),
        (np.full((8, 8, 3), 200.0), np.ones((2, 8, 8), np.float32), [0], r"\[0, 1\]"),
        (np.full((8, 8, 3), np.nan), np.ones((2, 8, 8), np.float32), [0], "NaN"),
        (np.full((8, 8, 3), 300, np.int32), np.ones((2, 8, 8), np.float32), [0], "0..255"),
        (np.zeros((8, 8, 3), bool), np.ones((2, 8, 8), np.float32), [0], "not supported"),
    ],
)
def test_bad_inputs_raise_clear_errors(image, probs, class_ids, message) -> None:
    with pytest.raises(ValueError, match=message):
        refine_with_crf(image, probs, class_ids)


def test_params_are_validated_and_frozen() -> None:
    params = CrfParams()
    assert params.iterations == 10 and params.gaussian_sxy == 3 and params.gaussian_compat == 3
    assert 50 <= params.bilateral_sxy <= 80 and 5 <= params.bilateral_srgb <= 13
    assert 4 <= params.bilateral_compat <= 10
    with pytest.raises(ValueError, match="frozen"):
        params.iterations = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="iterations"):
        CrfParams(iterations=0)
    with pytest.raises(ValueError, match="bilateral_srgb"):
        CrfParams(bilateral_srgb=0)
    with pytest.raises(ValueError, match="min_confidence"):
        refine_with_crf(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 2)), [0], min_confidence=2)


def test_one_image_crf_refines_many_unaries_as_fresh_ones_would() -> None:
    image, probs, _ = _scene(seed=2)
    crf = ImageCrf(image)
    shifted = np.stack([probs[0] ** 2, probs[1]]).astype(np.float32)
    three = np.stack([probs[0], probs[1] * 0.5, probs[1] * 0.5]).astype(np.float32)
    for unary, ids in ((probs, [0]), (shifted, [0]), (three, [1, 4]), (probs, [3])):
        reused, fresh = crf.refine(unary, ids), refine_with_crf(image, unary, ids)
        np.testing.assert_array_equal(reused.labels, fresh.labels)
        np.testing.assert_array_equal(reused.confidence, fresh.confidence)
    with pytest.raises(ValueError, match="does not match"):
        crf.refine(np.ones((2, 8, 8), np.float32), [0])
