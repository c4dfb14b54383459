"""Dense CRF refinement (Kraehenbuehl & Koltun, NIPS 2011) via pydensecrf.

The unary is ``-log p`` of a probability map over background + the image's
present classes only: fewer labels make mean-field inference much faster and
keep absent classes from appearing. Two pairwise terms follow the paper:

* Gaussian (smoothness): ``sxy = 3``, ``compat = 3``; removes isolated pixels.
* Bilateral (appearance): nearby pixels of similar colour prefer one label.

The parameters, their defaults and bounds are :class:`~wsss_core.config.CrfParams`,
the pipeline's ``crf`` section less its pipeline-only fields (that section can
be passed as it is): bilateral ``sxy = 50, srgb = 13, compat = 10``, 10
iterations, chosen on both development datasets inside the ranges DSRG and
IRN use (GUIDE §5; AffinityNet/IRN's ``crf_inference`` uses ``sxy = 80``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydensecrf.densecrf as dcrf

from wsss_core.config import CrfParams
from wsss_core.probability import UNKNOWN, channel_to_label, check_class_ids

__all__ = ["CrfParams", "CrfResult", "ImageCrf", "refine_with_crf"]

# Probability floor before the log: -log(1e-5) ~ 11.5 caps how strongly a unary
# can forbid a label (pydensecrf.utils.unary_from_softmax uses the same).
PROBABILITY_FLOOR = 1e-5

DEFAULT_PARAMS = CrfParams()  # frozen, so one shared default is safe


@dataclass
class CrfResult:
    """CRF output: a uint8 label map and the marginal probability of each chosen label."""

    labels: np.ndarray  # uint8 [H, W]: 0 background, k + 1 class k, 255 below min_confidence
    confidence: np.ndarray  # float32 [H, W] in [0, 1]


def refine_with_crf(
    image: np.ndarray,
    probs: np.ndarray,
    class_ids: Sequence[int],
    params: CrfParams = DEFAULT_PARAMS,
    min_confidence: float | None = None,
) -> CrfResult:
    """Refine ``probs`` with a fully connected CRF over ``image``.

    Args:
        image: RGB image ``[H, W, 3]``; uint8, or another integer dtype with values in
            0..255, or floats in [0, 1] (scaled by 255). Anything else is rejected.
        probs: probability map ``[K + 1, H, W]``: background + ``class_ids``.
        class_ids: the image's target class ids; channel ``i + 1`` -> label ``class_ids[i] + 1``.
        params: CRF parameters; the pipeline's ``crf`` section (a ``CrfConfig``) will do.
        min_confidence: if set, pixels whose marginal is below it become 255 (unknown).
    """
    return ImageCrf(image, params).refine(probs, class_ids, min_confidence)


class ImageCrf:
    """One image's dense CRF: its pairwise kernels built once, then any number of unaries.

    Building the kernels (the appearance term's permutohedral lattice) is about a
    fifth of a refinement at 128-192 px, and the crf stage refines each image
    once per candidate background power. pydensecrf starts every inference from
    the unary it is given, so each :meth:`refine` returns exactly what
    :func:`refine_with_crf` would (tested).
    """

    def __init__(self, image: np.ndarray, params: CrfParams = DEFAULT_PARAMS) -> None:
        self.rgb = _as_uint8_rgb(image)
        self.params = params
        self._models: dict[int, dcrf.DenseCRF2D] = {}  # by label count

    def refine(
        self,
        probs: np.ndarray,
        class_ids: Sequence[int],
        min_confidence: float | None = None,
    ) -> CrfResult:
        """Refine ``probs`` ``[K + 1, H, W]`` (arguments as :func:`refine_with_crf`)."""
        ids = check_class_ids(class_ids)
        probs = _check_probs(probs, len(ids))
        if probs.shape[1:] != self.rgb.shape[:2]:
            raise ValueError(
                f"image size {self.rgb.shape[:2]} does not match probs {tuple(probs.shape[1:])}"
            )
        if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence}")

        marginals = self._mean_field(probs)
        best = marginals.argmax(axis=0)
        confidence = np.take_along_axis(marginals, best[None], axis=0)[0]
        confidence = np.clip(confidence, 0.0, 1.0).astype(np.float32)
        labels = channel_to_label(ids)[best]
        if min_confidence is not None:
            labels[confidence < min_confidence] = UNKNOWN
        return CrfResult(labels=labels, confidence=confidence)

    def _mean_field(self, probs: np.ndarray) -> np.ndarray:
        """DenseCRF2D inference; marginals ``float32 [n_labels, H, W]``."""
        n_labels, h, w = probs.shape
        if n_labels == 1:  # only background is possible; pydensecrf adds nothing here
            return np.ones((1, h, w), dtype=np.float32)
        unary = -np.log(np.clip(probs, PROBABILITY_FLOOR, 1.0)).reshape(n_labels, h * w)
        crf = self._model(n_labels)
        crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
        q = crf.inference(int(self.params.iterations))
        return np.asarray(q, dtype=np.float32).reshape(n_labels, h, w)

    def _model(self, n_labels: int) -> dcrf.DenseCRF2D:
        if n_labels not in self._models:
            h, w = self.rgb.shape[:2]
            crf = dcrf.DenseCRF2D(w, h, n_labels)
            params = self.params
            crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
            crf.addPairwiseBilateral(
                sxy=params.bilateral_sxy,
                srgb=params.bilateral_srgb,
                rgbim=self.rgb,
                compat=params.bilateral_compat,
            )
            self._models[n_labels] = crf
        return self._models[n_labels]


def _check_probs(probs: np.ndarray, k: int) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != k + 1:
        raise ValueError(
            f"probs must have shape [K + 1, H, W] with K = len(class_ids) = {k}, got {probs.shape}"
        )
    if min(probs.shape[1:]) < 1:
        raise ValueError(f"probs must have a non-empty image plane, got {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probs must be floating point, got dtype {probs.dtype}")
    if not np.isfinite(probs).all():
        raise ValueError("probs contain NaN or infinite values")
    if probs.min() < 0:
        raise ValueError("probs must be non-negative")
    return probs


def _as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """C-contiguous uint8 ``[H, W, 3]`` copy-or-view of ``image`` (see refine_with_crf)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB with shape [H, W, 3], got {image.shape}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.bool_ or not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"image dtype {image.dtype} is not supported; pass uint8 RGB")
    if np.issubdtype(image.dtype, np.integer):
        if image.min() < 0 or image.max() > 255:
            raise ValueError(
                f"integer image of dtype {image.dtype} has values outside 0..255; "
                "rescale it to uint8 first"
            )
        return np.ascontiguousarray(image, dtype=np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("image contains NaN or infinite values")
        if image.min() < 0 or image.max() > 1:
            raise ValueError(
                "float images must hold values in [0, 1]; convert 0..255 floats to uint8 first"
            )
        return np.ascontiguousarray(np.rint(image * 255.0), dtype=np.uint8)
    raise ValueError(f"image dtype {image.dtype} is not supported; pass uint8 RGB")
