"""Each image's background level, chosen from the image itself.

Without a saliency model, background is "where the CAMs are low"
(:func:`wsss_core.probability.probability_map`), and how low is set by one
exponent, ``background_power``. No single value suits every image: a CAM
covers only the discriminative part of a large object (the cat's nose), so
there a high power (background only where CAM is near 0) keeps the object,
while the CAM of a thin object (a digit's stroke) is far wider than the
object, so there a low power is right. Measured on the two development
datasets, the best fixed power differs (0.5 on the digits, 1.0 on the scenes)
and each one loses 0.08 mIoU on the other dataset.

So each image gets several candidate powers; the dense CRF refines each, and
the image keeps the refinement whose object outline lies on the strongest
image edges (:func:`outline_edge_strength`): a mask that stops inside an
object, or spills into the background, draws its outline across smooth or
self-similar regions, while the object's true outline is where colour
changes. The measure is the mean gradient magnitude of the lightly blurred
image (Sobel, summed over RGB) on the pixels either side of the line between
object and background. An empty refinement scores lowest, so a labelled
image is never emptied by the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from wsss_core.crf import CrfParams, CrfResult, ImageCrf
from wsss_core.probability import UNKNOWN, anchor_probabilities, probability_map

__all__ = ["BackgroundChoice", "edge_strength", "outline_edge_strength", "refine_best_background"]

# Blur before the gradient (pixels): image noise and fine texture should not count as edges.
EDGE_BLUR_SIGMA = 1.0
NO_OUTLINE = -1.0  # the score of a mask with no object pixel: below any real outline


@dataclass(frozen=True)
class BackgroundChoice:
    """The refinement an image keeps, and the background power it came from."""

    result: CrfResult
    background_power: float
    outline_strength: float


def edge_strength(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude ``float32 [H, W]`` of an RGB image, blurred by ``EDGE_BLUR_SIGMA``."""
    pixels = ndimage.gaussian_filter(
        np.asarray(image, np.float32), (EDGE_BLUR_SIGMA, EDGE_BLUR_SIGMA, 0)
    )
    gy = ndimage.sobel(pixels, axis=0)
    gx = ndimage.sobel(pixels, axis=1)
    return np.sqrt((gx**2 + gy**2).sum(axis=-1)).astype(np.float32)


def outline_edge_strength(labels: np.ndarray, strength: np.ndarray) -> float:
    """Mean ``strength`` on the pixels either side of the object/background line.

    ``labels`` is a label map (0 background, 255 unknown counts as background);
    ``NO_OUTLINE`` when it has no object pixel. A mask that is object everywhere
    (a frame-filling object) has no such line: it scores the image's mean
    strength, what an outline drawn anywhere would.
    """
    objects = (labels > 0) & (labels != UNKNOWN)
    if not objects.any():
        return NO_OUTLINE
    if objects.all():
        return float(strength.mean())
    inner = objects & ~ndimage.binary_erosion(objects, border_value=1)
    outer = ndimage.binary_dilation(objects) & ~objects
    return float(strength[inner | outer].mean())


def refine_best_background(
    image: np.ndarray,
    cams: np.ndarray,
    class_ids: Sequence[int],
    powers: Sequence[float],
    params: CrfParams | None = None,
    min_confidence: float | None = None,
    anchor: tuple[np.ndarray, float] | None = None,
    crf: ImageCrf | None = None,
) -> BackgroundChoice:
    """CRF-refine ``cams`` at every background power; keep the best-outlined result.

    Ties go to the first power in ``powers``. One power is a fixed choice (no search).
    ``anchor``: (label map, confidence): its labelled pixels enter the unary with that
    confidence (:func:`~wsss_core.probability.anchor_probabilities`).
    ``crf``: this image's CRF when the caller refines the image again (its kernels are
    then built once in all); it must have been built with ``params``.
    """
    if not powers:
        raise ValueError("powers must name at least one background power")
    params = params or CrfParams()
    if crf is None:
        crf = ImageCrf(image, params)  # one set of kernels for every power
    elif crf.params != params or crf.rgb.shape[:2] != np.shape(image)[:2]:
        raise ValueError("crf was built for another image size or other CRF parameters")
    strength = edge_strength(image) if len(powers) > 1 else None
    best: BackgroundChoice | None = None
    for power in powers:
        probs = probability_map(cams, background_power=power)
        if anchor is not None:
            probs = anchor_probabilities(probs, anchor[0], class_ids, confidence=anchor[1])
        result = crf.refine(probs, class_ids, min_confidence)
        score = NO_OUTLINE if strength is None else outline_edge_strength(result.labels, strength)
        if best is None or score > best.outline_strength:
            best = BackgroundChoice(result, float(power), score)
    assert best is not None
    return best
