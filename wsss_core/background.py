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

Two things defeat that measure. In an image of several classes, one
outline over all objects lets a candidate that loses a class (or shrinks
it to a speck) score as well as one that keeps it. And inside a textured
object (a photo pasted in a shape, a patterned coat) the gradient is strong
everywhere, so a mask that stops inside it scores as well as the true
outline. With ``background_score: class_outlines`` each labelled class is
scored on its own outline, the edge strength there times the square root of
the colour contrast across it (:func:`outline_colour_contrast`: the distance
between the mean colours of thin bands just inside and just outside, small
where both lie in the same texture), and the candidate's score is the mean
over the image's labelled classes, a lost class counting 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from wsss_core.config import DEFAULT_BACKGROUND_SCORE, BackgroundScore
from wsss_core.crf import CrfParams, CrfResult, ImageCrf
from wsss_core.probability import (
    UNKNOWN,
    anchor_probabilities,
    channel_to_label,
    probability_map,
)

__all__ = [
    "BackgroundChoice",
    "candidate_score",
    "class_outline_score",
    "edge_strength",
    "outline_colour_contrast",
    "outline_edge_strength",
    "refine_best_background",
]

# Blur before the gradient (pixels): image noise and fine texture should not count as edges.
EDGE_BLUR_SIGMA = 1.0
NO_OUTLINE = -1.0  # the score of a mask with no object pixel: below any real outline
# Width (pixels) of the bands either side of an outline whose mean colours are compared:
# wide enough to average out fine texture, narrow enough to stay next to the line
# (3-5 measured alike on both development datasets at the first pass).
CONTRAST_BAND = 4


@dataclass(frozen=True)
class BackgroundChoice:
    """The refinement an image keeps, and the background power it came from."""

    result: CrfResult
    background_power: float
    outline_score: float  # candidate_score of the kept refinement


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


def outline_colour_contrast(region: np.ndarray, image: np.ndarray) -> float:
    """RGB distance between the mean colours just inside and just outside ``region``'s outline.

    The bands are ``CONTRAST_BAND`` pixels wide; 0.0 when ``region`` lacks either
    (empty, or everywhere).
    """
    inner = region & ~ndimage.binary_erosion(region, iterations=CONTRAST_BAND, border_value=1)
    outer = ndimage.binary_dilation(region, iterations=CONTRAST_BAND) & ~region
    if not inner.any() or not outer.any():
        return 0.0
    inside, outside = (image[band].astype(np.float32).mean(axis=0) for band in (inner, outer))
    return float(np.linalg.norm(inside - outside))


def class_outline_score(region: np.ndarray, image: np.ndarray, strength: np.ndarray) -> float:
    """One class's outline: its edge strength times the square root of its colour contrast.

    0.0 for an empty region. The square root keeps the contrast from outweighing
    the edges (measured alike with the contrast itself on the digits, better on the
    scenes; ARCHITECTURE.md, "Thresholds").
    """
    if not region.any():
        return 0.0
    edge = outline_edge_strength(region.astype(np.uint8), strength)
    return edge * math.sqrt(outline_colour_contrast(region, image))


def candidate_score(
    labels: np.ndarray,
    image: np.ndarray,
    strength: np.ndarray,
    class_ids: Sequence[int],
    score: BackgroundScore,
) -> float:
    """How well a candidate mask's outlines follow the image (higher is better).

    ``edge``: the edge strength on the line between all objects and background.
    ``class_outlines``: the mean of :func:`class_outline_score` over the labelled
    classes, so a class the candidate loses counts 0 and one outline cannot speak
    for another. A candidate with no object pixel scores ``NO_OUTLINE`` either way.
    """
    if score == "edge":
        return outline_edge_strength(labels, strength)
    if not ((labels > 0) & (labels != UNKNOWN)).any():
        return NO_OUTLINE
    values = channel_to_label(class_ids)[1:]
    return float(np.mean([class_outline_score(labels == v, image, strength) for v in values]))


def refine_best_background(
    image: np.ndarray,
    cams: np.ndarray,
    class_ids: Sequence[int],
    powers: Sequence[float],
    params: CrfParams | None = None,
    min_confidence: float | None = None,
    anchor: tuple[np.ndarray, float] | None = None,
    crf: ImageCrf | None = None,
    score: BackgroundScore = DEFAULT_BACKGROUND_SCORE,
) -> BackgroundChoice:
    """CRF-refine ``cams`` at every background power; keep the best-outlined result.

    Ties go to the first power in ``powers``. One power is a fixed choice (no search).
    ``anchor``: (label map, confidence): its labelled pixels enter the unary with that
    confidence (:func:`~wsss_core.probability.anchor_probabilities`).
    ``crf``: this image's CRF when the caller refines the image again (its kernels are
    then built once in all); it must have been built with ``params``. ``score``: how
    candidates are ranked (:func:`candidate_score`).
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
        rank = (
            NO_OUTLINE
            if strength is None
            else candidate_score(result.labels, crf.rgb, strength, class_ids, score)
        )
        if best is None or rank > best.outline_score:
            best = BackgroundChoice(result, float(power), rank)
    assert best is not None
    return best
