"""Seeded region growing, DSRG (Huang et al., CVPR 2018).

DSRG grows seed cues into an image's unlabelled pixels: an unlabelled pixel
joins a neighbouring region of class ``c`` when ``c`` is its most probable
channel and ``P_c`` exceeds a threshold (0.85 for classes, 0.99 for background
in the paper), repeated until nothing changes, with 8-connectivity.

The fixed point of that iteration has a closed form, which is what we compute:
the pixels that may ever join class ``c`` (its *candidates*) belong to no other
class because each pixel has one most probable channel. So region ``c`` at the
fixed point is every 8-connected component of ``seed_c OR candidate_c`` that
touches ``seed_c``. One ``scipy.ndimage.label`` per channel replaces the
per-pixel breadth-first search.

An optional second criterion (DSRG's "similarity criterion", here on backbone
features) also requires a candidate's cosine similarity to its class region's
mean feature to reach ``similarity_threshold``. The mean moves as the region
grows, so that mode iterates the closed form until the labels stop changing.
Labels are only ever added, so it terminates.

Thresholds and CAM-derived maps: DSRG grows on a segmentation network's
softmax. On :func:`wsss_core.probability.probability_map` with
``background_power = 1`` a class probability never exceeds its CAM value, so
seeds taken at CAM >= 0.30 already contain every pixel that could pass 0.85
and growing adds nothing. Either make seeds stricter than the growing
criterion or sharpen the map (``background_power > 1``, or a network's softmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from wsss_core.probability import (
    NO_CHANNEL,
    UNKNOWN,
    channel_to_label,
    check_class_ids,
    label_channels,
)

__all__ = ["grow_regions"]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def grow_regions(
    seeds: np.ndarray,
    probs: np.ndarray,
    class_ids: Sequence[int],
    fg_threshold: float = 0.85,
    bg_threshold: float = 0.99,
    features: np.ndarray | None = None,
    similarity_threshold: float | None = None,
) -> np.ndarray:
    """Grow ``seeds`` into unknown pixels; returns a uint8 ``[H, W]`` label map.

    Args:
        seeds: uint8 label map ``[H, W]`` (0 background, ``k + 1`` class ``k``, 255 unknown).
        probs: probability map ``[K + 1, H, W]`` over background + ``class_ids``.
        class_ids: the image's target class ids, channel ``i + 1`` is ``class_ids[i]``.
        fg_threshold: a pixel may join a class region when that class is its most
            probable channel and its probability is ``> fg_threshold``.
        bg_threshold: the same for the background channel (channel 0).
        features: optional backbone features ``[D, h, w]`` (any ``h, w``: they are
            resized to ``H, W`` by nearest neighbour) enabling the similarity criterion.
        similarity_threshold: minimum cosine similarity between a candidate's feature
            and its class region's mean feature; required with ``features``.

    Seed pixels never change and regions never shrink; growing the result again
    changes nothing.
    """
    ids = check_class_ids(class_ids)
    seed_channels, probs = _validate(seeds, probs, ids, fg_threshold, bg_threshold)
    candidates = _candidate_channels(probs, fg_threshold, bg_threshold)
    candidates[seed_channels != NO_CHANNEL] = NO_CHANNEL
    if features is None:
        if similarity_threshold is not None:
            raise ValueError("similarity_threshold was given without features")
        grown = _grow_once(seed_channels, candidates)
    else:
        if similarity_threshold is None:
            raise ValueError("features were given without a similarity_threshold")
        if not -1.0 <= similarity_threshold <= 1.0:
            raise ValueError(
                f"similarity_threshold must lie in [-1, 1], got {similarity_threshold}"
            )
        feature_map = _FeatureMap(features, seed_channels.shape)
        grown = _grow_with_similarity(seed_channels, candidates, feature_map, similarity_threshold)
    return _channels_to_labels(grown, ids)


def _validate(
    seeds: np.ndarray,
    probs: np.ndarray,
    ids: tuple[int, ...],
    fg_threshold: float,
    bg_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Check inputs; return seed channels (int16, ``NO_CHANNEL`` = unknown) and probs."""
    seeds = np.asarray(seeds)
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != len(ids) + 1:
        raise ValueError(
            f"probs must have shape [K + 1, H, W] with K = len(class_ids) = {len(ids)}, "
            f"got {probs.shape}"
        )
    if seeds.shape != probs.shape[1:]:
        raise ValueError(f"seeds shape {seeds.shape} does not match probs {probs.shape[1:]}")
    if not np.isfinite(probs).all():
        raise ValueError("probs contain NaN or infinite values")
    for name, value in (("fg_threshold", fg_threshold), ("bg_threshold", bg_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return label_channels(seeds, ids, name="seeds"), probs


def _candidate_channels(probs: np.ndarray, fg_threshold: float, bg_threshold: float) -> np.ndarray:
    """Channel each pixel may join (its argmax if above that channel's threshold) or -1."""
    top = probs.argmax(axis=0)
    peak = probs.max(axis=0)  # cheaper than gathering at ``top``
    thresholds = np.full(probs.shape[0], fg_threshold, dtype=np.float64)
    thresholds[0] = bg_threshold
    return np.where(peak > thresholds[top], top, NO_CHANNEL).astype(np.int16)


def _present(channels: np.ndarray) -> np.ndarray:
    """Channels that occur in an int16 channel map (bincount beats np.unique here)."""
    counts = np.bincount(channels.ravel() + 1)  # shift NO_CHANNEL (-1) to bin 0
    return np.flatnonzero(counts[1:])


def _grow_once(regions: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Closed-form DSRG fixed point for fixed candidate sets.

    ``regions`` and ``candidates`` are int16 channel maps (``NO_CHANNEL`` = none);
    candidates must be disjoint from labelled pixels.
    """
    grown = regions.copy()
    for c in np.intersect1d(_present(regions), _present(candidates)):
        region = regions == c
        components, n = ndimage.label(region | (candidates == c), structure=EIGHT_CONNECTED)
        touches = np.zeros(n + 1, dtype=bool)
        touches[components[region]] = True
        touches[0] = False
        grown[touches[components] & ~region] = c
    return grown


class _FeatureMap:
    """Unit-normalised features at their own resolution, addressed at ``H x W``.

    Equivalent to nearest-neighbour resizing the features to ``H x W`` but without
    materialising a ``[D, H, W]`` array (2048 x 500 x 375 floats would be 1.5 GB).
    """

    def __init__(self, features: np.ndarray, shape: tuple[int, int]) -> None:
        features = np.asarray(features)
        if features.ndim != 3 or min(features.shape) < 1:
            raise ValueError(f"features must have shape [D, h, w], got {features.shape}")
        if not np.isfinite(features).all():
            raise ValueError("features contain NaN or infinite values")
        d, h, w = features.shape
        self.raw = features.reshape(d, h * w).astype(np.float32)
        norms = np.linalg.norm(self.raw, axis=0)
        self.unit = self.raw / np.maximum(norms, np.finfo(np.float32).tiny)
        rows = np.arange(shape[0]) * h // shape[0]
        cols = np.arange(shape[1]) * w // shape[1]
        self.cell = rows[:, None] * w + cols[None, :]  # low-res cell of each pixel
        self.n_cells = h * w

    def similarity(self, region: np.ndarray) -> np.ndarray:
        """Cosine similarity ``[H, W]`` of every pixel to the mean feature of ``region``."""
        counts = np.bincount(self.cell[region], minlength=self.n_cells).astype(np.float32)
        # einsum, not ``@``: these matrix-vector products are small, and a threaded BLAS
        # on a busy machine (parallel workers) can make them 30x slower.
        mean = np.einsum("dn,n->d", self.raw, counts)
        norm = np.linalg.norm(mean)
        if norm == 0:
            return np.zeros(self.cell.shape, dtype=np.float32)
        return np.einsum("d,dn->n", mean / norm, self.unit)[self.cell]


def _grow_with_similarity(
    seed_channels: np.ndarray,
    candidates: np.ndarray,
    features: _FeatureMap,
    threshold: float,
) -> np.ndarray:
    """Grow with the probability and feature-similarity criteria until stable."""
    regions = seed_channels
    while True:
        allowed = np.full_like(candidates, NO_CHANNEL)
        open_candidates = (candidates != NO_CHANNEL) & (regions == NO_CHANNEL)
        for c in _present(regions):
            mask = open_candidates & (candidates == c)
            if mask.any():
                similar = features.similarity(regions == c) >= threshold
                allowed[mask & similar] = c
        grown = _grow_once(regions, allowed)
        if np.array_equal(grown, regions):
            return grown
        regions = grown


def _channels_to_labels(channels: np.ndarray, ids: tuple[int, ...]) -> np.ndarray:
    """int16 channel map -> uint8 label map (``NO_CHANNEL`` -> 255)."""
    lut = np.append(channel_to_label(ids), np.uint8(UNKNOWN))  # index -1 -> 255
    return lut[channels]
