"""Per-pixel probability maps over {background} + an image's target classes.

Both DSRG's region growing (Huang et al., CVPR 2018) and the dense CRF
(Kraehenbuehl & Koltun, NIPS 2011) need a distribution over background and the
classes present in the image, not raw CAMs. The layout follows ARCHITECTURE.md:
``float32 [K + 1, H, W]``, channel 0 background, channel ``i + 1`` the image's
``i``-th target class, summing to 1 per pixel.

How background probability is formed
------------------------------------
DSRG took its background cues from a saliency model. We have none, so *low
CAM stands in for background*, as in AffinityNet / IRN (Ahn & Kwak 2018/2019):

    bg(x)  = (1 - max_k cam_k(x)) ** background_power
    P(x)   = [bg(x), cam_1(x), ..., cam_K(x)] / sum

With ``background_power = 1`` a single-class pixel with CAM value ``m`` gets
exactly ``P_fg = m`` and ``P_bg = 1 - m``: the normalised CAM is read as a
probability and the fg/bg decision flips at ``m = 0.5``. Larger powers
(AffinityNet uses 4 to 32) shrink the background score and so favour
foreground; smaller powers favour background. Note that with power 1,
``P_c <= cam_c``: DSRG growing at 0.85 can then only reach pixels whose CAM is
above 0.85, so seeds must be stricter than that for growing to add anything
(see :mod:`wsss_core.grow`).

One power is not one model of background: how far a CAM reaches beyond or
short of its object depends on the object. The CAM of a large object covers
its most discriminative part only (a low power then floods the rest with
background); the CAM of a thin one is wider than the object (a high power then
spills into the background). So the final masks do not use one power: the
crf stage refines each image at several powers and keeps the refinement whose
object outline follows the image's own edges (:mod:`wsss_core.background`),
and a labelled class left with (nearly) no pixel gets its grown region back
(:mod:`wsss_core.recovery`). Background is thus decided by the CAMs (where
the classifier sees the class), the image (where its outline runs) and the
image-level labels (every labelled class keeps a region). Growing still uses
one power (``grow.background_power``).

This module also owns the label-value <-> channel mapping that seeds, growing
and the CRF share (:func:`check_class_ids`, :func:`channel_lookup`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

UNKNOWN = 255
MAX_CLASS_ID = 253  # label value k + 1 must stay below UNKNOWN
NO_CHANNEL = -1

__all__ = [
    "MAX_CLASS_ID",
    "NO_CHANNEL",
    "UNKNOWN",
    "anchor_probabilities",
    "channel_lookup",
    "channel_to_label",
    "check_class_ids",
    "label_channels",
    "probability_map",
]


def check_class_ids(class_ids: Sequence[int]) -> tuple[int, ...]:
    """Return ``class_ids`` as a tuple of ints after checking range and uniqueness."""
    ids = tuple(int(c) for c in class_ids)
    bad = [c for c in ids if not 0 <= c <= MAX_CLASS_ID]
    if bad:
        raise ValueError(f"class ids must lie in 0..{MAX_CLASS_ID}, got {bad}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"class ids must be unique, got {list(ids)}")
    return ids


def channel_lookup(class_ids: Sequence[int]) -> np.ndarray:
    """Table ``lut[label_value] -> channel`` (``NO_CHANNEL`` for 255 and absent classes).

    Label 0 maps to channel 0, label ``class_ids[i] + 1`` to channel ``i + 1``.
    Indexing the table with a uint8 label map converts it in one vectorised step.
    """
    lut = np.full(256, NO_CHANNEL, dtype=np.int16)
    lut[0] = 0
    for i, c in enumerate(check_class_ids(class_ids)):
        lut[c + 1] = i + 1
    return lut


def channel_to_label(class_ids: Sequence[int]) -> np.ndarray:
    """Table ``label[channel]``: inverse of :func:`channel_lookup` (uint8, length K + 1)."""
    ids = check_class_ids(class_ids)
    return np.array([0, *(c + 1 for c in ids)], dtype=np.uint8)


def label_channels(
    labels: np.ndarray, class_ids: Sequence[int], name: str = "labels"
) -> np.ndarray:
    """Channel index per pixel (int16, ``NO_CHANNEL`` for 255); rejects foreign labels."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D label map [H, W], got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label map (uint8), got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > UNKNOWN):
        raise ValueError(f"{name} values must lie in 0..255")
    channels = channel_lookup(class_ids)[labels.astype(np.uint8, copy=False)]
    foreign = np.unique(labels[(channels == NO_CHANNEL) & (labels != UNKNOWN)])
    if foreign.size:
        classes = [int(v) - 1 for v in foreign]
        if len(class_ids) == 0:
            raise ValueError(
                f"{name} contain class labels {foreign.tolist()} (class ids {classes}) "
                "but class_ids is empty"
            )
        raise ValueError(
            f"{name} contain labels {foreign.tolist()} (class ids {classes}) that are not in "
            f"class_ids {list(class_ids)}"
        )
    return channels


def probability_map(cams: np.ndarray, background_power: float = 1.0) -> np.ndarray:
    """Background + class probabilities ``float32 [K + 1, H, W]`` from normalised CAMs.

    ``cams`` is ``[K, H, W]`` with each map in [0, 1] (ARCHITECTURE.md). Values are
    clipped to [0, 1] so interpolation overshoot cannot yield a negative score.
    Background is ``(1 - max_k cam_k) ** background_power`` (see module docstring);
    ``K = 0`` gives an all-background map.
    """
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f"cams must have shape [K, H, W], got {cams.shape}")
    if not np.isfinite(cams).all():
        raise ValueError("cams contain NaN or infinite values")
    if not (np.isfinite(background_power) and background_power >= 0):
        raise ValueError(f"background_power must be finite and >= 0, got {background_power}")
    k, h, w = cams.shape
    probs = np.empty((k + 1, h, w), dtype=np.float32)
    np.clip(cams, 0.0, 1.0, out=probs[1:])
    peak = probs[1:].max(axis=0) if k else np.zeros((h, w), dtype=np.float32)
    probs[0] = np.power(1.0 - peak, background_power, dtype=np.float32)
    total = probs.sum(axis=0)
    # bg + max cam >= 1 for cams in [0, 1], so a zero sum cannot happen; guard anyway.
    empty = total <= 0
    if empty.any():
        probs[0][empty] = 1.0
        total[empty] = 1.0
    probs /= total
    return probs


def anchor_probabilities(
    probs: np.ndarray,
    labels: np.ndarray,
    class_ids: Sequence[int],
    confidence: float = 0.9,
) -> np.ndarray:
    """Replace the distribution at labelled pixels with a confident one-hot-like vector.

    Pixels labelled background or ``class_ids[i] + 1`` get ``confidence`` on their
    channel and ``(1 - confidence) / K`` on each other channel; unknown (255)
    pixels keep ``probs``. Grown DSRG regions enter the CRF this way as its unary,
    while ``confidence < 1`` still lets the pairwise terms correct them.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    ids = check_class_ids(class_ids)
    n_channels = len(ids) + 1
    if probs.ndim != 3 or probs.shape[0] != n_channels:
        raise ValueError(
            f"probs must have shape [K + 1, H, W] with K = len(class_ids) = {len(ids)}, "
            f"got {probs.shape}"
        )
    if not np.isfinite(probs).all():
        raise ValueError("probs contain NaN or infinite values")
    if labels.shape != probs.shape[1:]:
        raise ValueError(f"labels shape {labels.shape} does not match probs {probs.shape[1:]}")
    if not 0.0 < confidence <= 1.0:
        raise ValueError(f"confidence must lie in (0, 1], got {confidence}")
    channels = label_channels(labels, ids)
    out = probs.astype(np.float32, copy=True)
    known = channels != NO_CHANNEL
    if not known.any():
        return out
    rest = (1.0 - confidence) / (n_channels - 1) if n_channels > 1 else 0.0
    anchored = np.full((n_channels, int(known.sum())), rest, dtype=np.float32)
    # With a single channel the only valid distribution is 1 on it.
    anchored[channels[known], np.arange(anchored.shape[1])] = confidence if n_channels > 1 else 1.0
    out[:, known] = anchored
    return out
