"""Tests for wsss_core.grow: DSRG seeded region growing (Huang et al., CVPR 2018)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from wsss_core.grow import grow_regions
from wsss_core.probability import probability_map

U = 255


def _two_class_probs(fg: np.ndarray, bg: float = 0.0) -> np.ndarray:
    """[2, H, W] probs: channel 1 = fg, channel 0 = 1 - fg (single class id 0)."""
    fg = np.asarray(fg, dtype=np.float32)
    return np.stack([1.0 - fg, fg]).astype(np.float32)


def _reference_grow(seeds, probs, class_ids, fg_threshold, bg_threshold):
    """Literal DSRG iteration: add 8-neighbouring qualifying pixels until nothing changes."""
    top = probs.argmax(axis=0)
    peak = probs.max(axis=0)
    labels_of = np.array([0, *(c + 1 for c in class_ids)])
    thresholds = np.where(np.arange(len(labels_of)) == 0, bg_threshold, fg_threshold)
    qualifies = peak > thresholds[top]
    out = seeds.copy()
    changed = True
    while changed:
        changed = False
        for channel, label in enumerate(labels_of):
            near = ndimage.binary_dilation(out == label, structure=np.ones((3, 3), bool))
            add = near & (out == U) & qualifies & (top == channel)
            if add.any():
                out[add] = label
                changed = True
    return out


def test_reaches_whole_connected_candidate_region_including_diagonals() -> None:
    fg = np.zeros((5, 5))
    # A diagonal staircase of candidates: only 8-connectivity links it.
    for i in range(5):
        fg[i, i] = 0.95
    seeds = np.full((5, 5), U, np.uint8)
    seeds[0, 0] = 1
    out = grow_regions(seeds, _two_class_probs(fg), [0], fg_threshold=0.85, bg_threshold=1.0)
    np.testing.assert_array_equal(np.diag(out), [1] * 5)
    assert (out[fg == 0] == U).all()


def test_zero_probability_barrier_stops_growth() -> None:
    fg = np.full((6, 7), 0.95)
    fg[:, 3] = 0.0  # a full column where the class probability is 0
    seeds = np.full(fg.shape, U, np.uint8)
    seeds[2, 0] = 1
    out = grow_regions(seeds, _two_class_probs(fg), [0], bg_threshold=1.0)
    assert (out[:, :3] == 1).all()
    assert (out[:, 3:] == U).all()  # right of the barrier is unreachable


def test_candidates_not_touching_a_seed_stay_unknown() -> None:
    fg = np.zeros((5, 9))
    fg[1:4, 1:3] = 0.95
    fg[1:4, 6:8] = 0.95
    seeds = np.full(fg.shape, U, np.uint8)
    seeds[2, 1] = 1
    out = grow_regions(seeds, _two_class_probs(fg), [0], bg_threshold=1.0)
    assert (out[1:4, 1:3] == 1).all()
    assert (out[1:4, 6:8] == U).all()


def test_background_uses_its_own_threshold() -> None:
    fg = np.array([[0.0, 0.005, 0.05, 0.0]])  # P_bg = 1, 0.995, 0.95, 1
    seeds = np.array([[0, U, U, U]], np.uint8)
    out = grow_regions(seeds, _two_class_probs(fg), [0], bg_threshold=0.99)
    np.testing.assert_array_equal(out, [[0, 0, U, U]])


def test_pixel_joins_only_its_most_probable_class() -> None:
    probs = np.zeros((3, 1, 3), np.float32)
    probs[:, 0, 0] = [0.0, 1.0, 0.0]
    probs[:, 0, 1] = [0.0, 0.05, 0.95]  # next to class 3's seed but belongs to class 9
    probs[:, 0, 2] = [0.0, 0.0, 1.0]
    seeds = np.array([[4, U, U]], np.uint8)
    out = grow_regions(seeds, probs, [3, 9])
    np.testing.assert_array_equal(out, [[4, U, U]])


def test_monotone_and_idempotent_and_matches_literal_iteration() -> None:
    rng = np.random.default_rng(1234)
    for trial in range(20):
        k = int(rng.integers(1, 4))
        h, w = (int(v) for v in rng.integers(8, 24, size=2))
        raw = ndimage.gaussian_filter(rng.random((k, h, w)), sigma=(0, 2, 2))
        cams = (raw - raw.min()) / (raw.max() - raw.min())
        class_ids = sorted(rng.choice(20, size=k, replace=False).tolist())
        probs = probability_map(cams.astype(np.float32), background_power=2.0)
        seeds = np.full((h, w), U, np.uint8)
        picks = rng.random((h, w)) < 0.03
        seeds[picks] = rng.choice([0, *(c + 1 for c in class_ids)], size=int(picks.sum()))
        fg_t, bg_t = float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.9))

        out = grow_regions(seeds, probs, class_ids, fg_threshold=fg_t, bg_threshold=bg_t)
        known = seeds != U
        np.testing.assert_array_equal(out[known], seeds[known], err_msg=f"trial {trial}")
        again = grow_regions(out, probs, class_ids, fg_threshold=fg_t, bg_threshold=bg_t)
        np.testing.assert_array_equal(again, out, err_msg=f"trial {trial}")
        expected = _reference_grow(seeds, probs, class_ids, fg_t, bg_t)
        np.testing.assert_array_equal(out, expected, err_msg=f"trial {trial}")


def test_empty_class_list_with_background_seeds_is_valid() -> None:
    probs = np.ones((1, 3, 3), np.float32)
    seeds = np.full((3, 3), U, np.uint8)
    seeds[1, 1] = 0
    out = grow_regions(seeds, probs, [], bg_threshold=0.99)
    np.testing.assert_array_equal(out, 0)
    np.testing.assert_array_equal(grow_regions(np.full((3, 3), U, np.uint8), probs, []), U)


@pytest.mark.parametrize(
    ("seeds", "probs", "class_ids", "message"),
    [
        (np.full((3, 3), U, np.uint8), np.ones((2, 3, 4), np.float32), [0], "does not match"),
        (np.full((3, 3), U, np.uint8), np.ones((3, 3, 3), np.float32), [0], r"K = len"),
        (np.full((3, 3), U, np.uint8), np.full((2, 3, 3), np.nan, np.float32), [0], "NaN"),
        (np.full((3, 3), 1, np.uint8), np.ones((1, 3, 3), np.float32), [], "class_ids is empty"),
        (np.full((3, 3), 5, np.uint8), np.ones((2, 3, 3), np.float32), [0], "not in class_ids"),
        (np.full((3, 3), 0.5), np.ones((2, 3, 3), np.float32), [0], "integer label map"),
        (np.full((3, 3, 1), U, np.uint8), np.ones((2, 3, 3), np.float32), [0], "does not match"),
    ],
)
def test_bad_inputs_raise_clear_errors(seeds, probs, class_ids, message) -> None:
    with pytest.raises(ValueError, match=message):
        grow_regions(seeds, probs, class_ids)


def test_bad_thresholds_and_mode_arguments() -> None:
    seeds = np.full((2, 2), U, np.uint8)
    probs = np.ones((2, 2, 2), np.float32) / 2
    with pytest.raises(ValueError, match="fg_threshold"):
        grow_regions(seeds, probs, [0], fg_threshold=1.5)
    with pytest.raises(ValueError, match="without features"):
        grow_regions(seeds, probs, [0], similarity_threshold=0.5)
    with pytest.raises(ValueError, match="without a similarity_threshold"):
        grow_regions(seeds, probs, [0], features=np.ones((4, 2, 2)))
    with pytest.raises(ValueError, match=r"\[D, h, w\]"):
        grow_regions(seeds, probs, [0], features=np.ones((2, 2)), similarity_threshold=0.5)


def _feature_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1x8 strip, all strong candidates; features flip direction at column 5."""
    probs = _two_class_probs(np.full((1, 8), 0.95))
    seeds = np.full((1, 8), U, np.uint8)
    seeds[0, 0] = 1
    features = np.zeros((2, 1, 8), np.float32)
    features[0, :, :5] = 1.0  # similar to the seed
    features[1, :, 5:] = 1.0  # orthogonal to the seed
    return seeds, probs, features


def test_feature_similarity_blocks_dissimilar_pixels() -> None:
    seeds, probs, features = _feature_scene()
    plain = grow_regions(seeds, probs, [0], bg_threshold=1.0)
    gated = grow_regions(
        seeds, probs, [0], bg_threshold=1.0, features=features, similarity_threshold=0.8
    )
    assert (plain == 1).all()
    np.testing.assert_array_equal(gated, [[1, 1, 1, 1, 1, U, U, U]])
    again = grow_regions(
        gated, probs, [0], bg_threshold=1.0, features=features, similarity_threshold=0.8
    )
    np.testing.assert_array_equal(again, gated)


def test_feature_similarity_uses_the_moving_region_mean() -> None:
    # Features rotate slowly along the strip: each pixel is similar to its region's
    # mean when it is reached, but far from the seed alone.
    angles = np.linspace(0.0, np.pi / 2, 12)
    features = np.stack([np.cos(angles), np.sin(angles)])[:, None, :]
    probs = _two_class_probs(np.full((1, 12), 0.95))
    seeds = np.full((1, 12), U, np.uint8)
    seeds[0, 0] = 1
    out = grow_regions(
        seeds, probs, [0], bg_threshold=1.0, features=features, similarity_threshold=0.97
    )
    reached = int((out == 1).sum())
    seed_only = int((np.cos(angles) >= 0.97).sum())  # what a fixed seed mean would allow
    assert reached > seed_only


def test_low_resolution_features_are_resized() -> None:
    seeds, probs, features = _feature_scene()
    probs = np.repeat(np.repeat(probs, 2, axis=1), 2, axis=2)  # 2 x 16
    seeds = np.repeat(np.repeat(seeds, 2, axis=0), 2, axis=1)
    out = grow_regions(
        seeds, probs, [0], bg_threshold=1.0, features=features, similarity_threshold=0.8
    )
    assert (out[:, :10] == 1).all()
    assert (out[:, 10:] == U).all()
