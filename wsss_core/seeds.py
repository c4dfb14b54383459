"""Seed cues from CAMs, as in DSRG (Huang et al., CVPR 2018).

A seed map is a uint8 label map (ARCHITECTURE.md): ``k + 1`` where class ``k`` is
confidently present, ``0`` where the pixel is confidently background and ``255``
where we do not know yet. Region growing (:mod:`wsss_core.grow`) later fills
the unknown pixels.

* Foreground: the class's normalised CAM is ``>= fg_threshold`` *and* it is the
  top class at the pixel, so overlapping CAMs resolve to the strongest class.
* Background: every present class's CAM is ``< bg_threshold``. DSRG used a
  saliency model for background; we have none, so low CAM stands in.
* Optional border prior: objects in photos rarely fill the frame edge, so
  border pixels that are not foreground seeds may be declared background.

Defaults ``fg_threshold = 0.30`` / ``bg_threshold = 0.05`` are IRN's
``conf_fg_thres`` / ``conf_bg_thres`` (Ahn et al., CVPR 2019). They are a start,
not a law: choose them from the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsss_core.probability import UNKNOWN, check_class_ids

__all__ = ["make_seeds"]


def _validate(
    cams: np.ndarray,
    class_ids: Sequence[int],
    fg_threshold: float,
    bg_threshold: float,
    border_width: int,
) -> tuple[np.ndarray, tuple[int, ...]]:
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f"cams must have shape [K, H, W], got {cams.shape}")
    ids = check_class_ids(class_ids)
    if len(ids) != cams.shape[0]:
        raise ValueError(
            f"len(class_ids) = {len(ids)} does not match the {cams.shape[0]} CAM channels"
        )
    if not np.isfinite(cams).all():
        raise ValueError("cams contain NaN or infinite values")
    if not (np.isfinite(fg_threshold) and np.isfinite(bg_threshold)):
        raise ValueError("fg_threshold and bg_threshold must be finite")
    if fg_threshold <= bg_threshold:
        raise ValueError(
            f"fg_threshold ({fg_threshold}) must be greater than bg_threshold ({bg_threshold})"
        )
    if int(border_width) != border_width or border_width < 1:
        raise ValueError(f"border_width must be a positive integer, got {border_width}")
    return cams, ids


def _border_mask(shape: tuple[int, int], width: int) -> np.ndarray:
    """True on the outer ``width`` rows and columns."""
    mask = np.zeros(shape, dtype=bool)
    mask[:width, :] = mask[-width:, :] = True
    mask[:, :width] = mask[:, -width:] = True
    return mask


def make_seeds(
    cams: np.ndarray,
    class_ids: Sequence[int],
    fg_threshold: float = 0.30,
    bg_threshold: float = 0.05,
    border_background: bool = False,
    border_width: int = 4,
) -> np.ndarray:
    """DSRG-style seed cues, uint8 ``[H, W]`` with values ``0``, ``k + 1`` or ``255``.

    Args:
        cams: normalised CAMs ``[K, H, W]``, channel ``i`` for ``class_ids[i]``.
        class_ids: the image's target class ids, one per CAM channel.
        fg_threshold: a pixel is a seed of its top class when that CAM is ``>=`` this.
        bg_threshold: a pixel is a background seed when every CAM is ``<`` this.
        border_background: also make border pixels that are not foreground seeds
            background (a prior that replaces DSRG's saliency model).
        border_width: width in pixels of that border band.

    Ties between classes go to the first in ``class_ids`` (``argmax`` order), so the
    result is deterministic.
    """
    cams, ids = _validate(cams, class_ids, fg_threshold, bg_threshold, border_width)
    _, h, w = cams.shape
    seeds = np.full((h, w), UNKNOWN, dtype=np.uint8)
    if ids:
        top = cams.argmax(axis=0)
        peak = np.take_along_axis(cams, top[None], axis=0)[0]
        labels = np.asarray(ids, dtype=np.uint8)[top] + 1
        background = peak < bg_threshold
        foreground = peak >= fg_threshold
        seeds[foreground] = labels[foreground]
    else:
        # No target class: nothing can be foreground, every pixel is background.
        background = np.ones((h, w), dtype=bool)
        foreground = np.zeros((h, w), dtype=bool)
    seeds[background] = 0
    if border_background:
        seeds[_border_mask((h, w), int(border_width)) & ~foreground] = 0
    return seeds
