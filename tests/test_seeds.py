"""Tests for wsss_core.seeds: DSRG-style cues from CAMs."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_core.seeds import make_seeds


def test_thresholds_split_foreground_background_unknown() -> None:
    cams = np.array([[[0.9, 0.5, 0.02, 0.3]]], dtype=np.float32)
    seeds = make_seeds(cams, class_ids=[6], fg_threshold=0.5, bg_threshold=0.05)
    np.testing.assert_array_equal(seeds, [[7, 7, 0, 255]])  # fg is >=, so 0.5 counts
    assert seeds.dtype == np.uint8


def test_conflicts_go_to_the_top_class() -> None:
    cams = np.array(
        [
            [[0.9, 0.6, 0.7]],  # class id 2
            [[0.8, 0.95, 0.7]],  # class id 5
        ],
        dtype=np.float32,
    )
    seeds = make_seeds(cams, class_ids=[2, 5], fg_threshold=0.5, bg_threshold=0.1)
    # Exact ties go to the first class in class_ids (deterministic argmax order).
    np.testing.assert_array_equal(seeds, [[3, 6, 3]])


def test_background_needs_every_class_low() -> None:
    cams = np.array([[[0.01, 0.01]], [[0.01, 0.2]]], dtype=np.float32)
    seeds = make_seeds(cams, [0, 1], fg_threshold=0.5, bg_threshold=0.05)
    np.testing.assert_array_equal(seeds, [[0, 255]])


def test_border_prior_makes_unclaimed_border_background() -> None:
    cams = np.full((1, 6, 6), 0.2, dtype=np.float32)  # unknown everywhere
    cams[0, 0, 0] = 1.0  # a foreground seed on the border must survive
    without = make_seeds(cams, [0], 0.5, 0.05)
    seeds = make_seeds(cams, [0], 0.5, 0.05, border_background=True, border_width=1)
    assert (without[1:, :] == 255).all()
    assert seeds[0, 0] == 1
    border = np.ones((6, 6), dtype=bool)
    border[1:-1, 1:-1] = False
    border[0, 0] = False
    assert (seeds[border] == 0).all()
    assert (seeds[1:-1, 1:-1] == 255).all()


def test_border_width_two() -> None:
    cams = np.full((1, 8, 8), 0.2, dtype=np.float32)
    seeds = make_seeds(cams, [0], 0.5, 0.05, border_background=True, border_width=2)
    assert (seeds[2:-2, 2:-2] == 255).all()
    assert (seeds[:2] == 0).all() and (seeds[:, -2:] == 0).all()


def test_no_classes_means_all_background() -> None:
    seeds = make_seeds(np.zeros((0, 3, 4), np.float32), [])
    np.testing.assert_array_equal(seeds, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fg_threshold": 0.1, "bg_threshold": 0.2}, "must be greater than bg_threshold"),
        ({"fg_threshold": 0.2, "bg_threshold": 0.2}, "must be greater than bg_threshold"),
        ({"class_ids": [0, 1]}, r"len\(class_ids\) = 2 does not match the 1 CAM"),
        ({"class_ids": [300]}, "class ids must lie in"),
        ({"cams": np.zeros((3, 3), np.float32)}, r"\[K, H, W\]"),
        ({"cams": np.full((1, 3, 3), np.nan, np.float32)}, "NaN"),
        ({"border_background": True, "border_width": 0}, "border_width"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs: dict, message: str) -> None:
    args = {"cams": np.zeros((1, 3, 3), np.float32), "class_ids": [0], **kwargs}
    with pytest.raises(ValueError, match=message):
        make_seeds(**args)
