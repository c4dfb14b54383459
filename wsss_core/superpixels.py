"""Maps pooled over superpixels (after MCOF, Wang et al. CVPR 2018).

A CAM is coarse (one value per 16 x 16 pixels, upsampled), so its regions
ignore the image's edges: they stop short of an object's outline or spill over
it. SLIC (Achanta et al. 2012, scikit-image) cuts the image into compact
regions of similar colour that follow its edges; replacing each class's map by
its mean inside each superpixel makes every later threshold (seeds, growing)
choose whole superpixels, so the regions end on image edges.

The pooled maps keep the CAM conventions (ARCHITECTURE.md): non-negative, each
divided by its own maximum (the mean over a superpixel is below the peak it
contains, so the maps are normalised again; an all-zero map stays zero).

SLIC has no randomness (a regular grid of starting centres, a fixed number of
iterations), so the labels are a pure function of the image and the settings.
"""

from __future__ import annotations

import numpy as np
from skimage.segmentation import slic

__all__ = ["SLIC_SIGMA", "pool_over_superpixels", "superpixel_labels"]

# Gaussian smoothing before SLIC, in pixels: image grain (JPEG noise, the demo
# datasets' grain) would otherwise fray the superpixel outlines.
SLIC_SIGMA = 1.0


def superpixel_labels(image: np.ndarray, segments: int, compactness: float) -> np.ndarray:
    """SLIC superpixels of an RGB image ``[H, W, 3]``: int32 labels ``[H, W]`` from 0.

    Args:
        image: uint8 RGB pixels.
        segments: the approximate number of superpixels (SLIC's ``n_segments``).
        compactness: SLIC's colour / space balance (higher: squarer superpixels).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB [H, W, 3], got shape {image.shape}")
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    if not compactness > 0:
        raise ValueError(f"compactness must be positive, got {compactness}")
    labels = slic(
        image,
        n_segments=int(segments),
        compactness=float(compactness),
        sigma=SLIC_SIGMA,
        start_label=0,
        channel_axis=-1,
    )
    return labels.astype(np.int32, copy=False)


def pool_over_superpixels(maps: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each map ``[K, H, W]`` replaced by its mean in each superpixel, then max-normalised.

    Returns float32 ``[K, H, W]``, constant inside each superpixel of ``labels``.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape [K, H, W], got {maps.shape}")
    if labels.shape != maps.shape[1:]:
        raise ValueError(
            f"superpixel labels {labels.shape} do not match the maps' size {maps.shape[1:]}"
        )
    if labels.min(initial=0) < 0:
        raise ValueError("superpixel labels must be non-negative")
    flat = labels.ravel()
    count = np.bincount(flat).astype(np.float64)
    count[count == 0] = 1  # unused label numbers (none from SLIC; any array may have gaps)
    pooled = np.empty(maps.shape, np.float32)
    for channel, values in enumerate(maps):
        means = np.bincount(flat, weights=values.ravel().astype(np.float64)) / count
        pixels = means[flat].reshape(labels.shape)
        peak = pixels.max(initial=0.0)
        pooled[channel] = pixels / peak if peak > 0 else pixels
    return pooled
