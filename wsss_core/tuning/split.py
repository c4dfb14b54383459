"""A seeded split of the true masks into a tuning part and a held-out part, by class.

Images are dealt class by class, rarest class first, each to the part further
below its share, so the parts alternate and a class with at least two images
lands in both; the same masks and seed give the same split whatever order
they come in.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from wsss_core.tuning.truth import TrueMask

# Below this many true masks tuning is refused: with fewer than ten held-out
# images a bootstrap interval on mIoU is wider (about +-0.05 on our development
# sets) than the gains tuning finds, so the held-out figure would say nothing.
MIN_TRUE_MASKS = 20
HELD_OUT_SHARE = 0.5


@dataclass(frozen=True)
class TruthSplit:
    tuning: tuple[TrueMask, ...]
    held_out: tuple[TrueMask, ...]


class TooFewTrueMasks(ValueError):
    """Tuning needs at least :data:`MIN_TRUE_MASKS` true masks."""


def _order_key(seed: int, image_id: str) -> str:
    return hashlib.sha256(f"{seed}|{image_id}".encode()).hexdigest()


def split_true_masks(
    masks: Sequence[TrueMask], seed: int = 0, held_out_share: float = HELD_OUT_SHARE
) -> TruthSplit:
    """Deal each class's images, rarest class first, in a seeded order."""
    if len(masks) < MIN_TRUE_MASKS:
        raise TooFewTrueMasks(
            f"{len(masks)} true mask(s); tuning needs at least {MIN_TRUE_MASKS}: half are "
            "held out to check the result, and with fewer than ten held-out images the "
            "interval on mIoU is wider than what tuning gains. Add ground-truth masks "
            "(`gt_uri`) or approve masks in review"
        )
    by_class: dict[int, list[TrueMask]] = defaultdict(list)
    for mask in masks:
        for class_id in set(mask.labels) or {-1}:
            by_class[class_id].append(mask)
    placed: dict[str, bool] = {}  # image id -> held out
    counts = {True: 0, False: 0}
    for class_id in sorted(by_class, key=lambda c: (len(by_class[c]), c)):
        pending = [m for m in by_class[class_id] if m.image_id not in placed]
        pending.sort(key=lambda m: _order_key(seed, m.image_id))
        for mask in pending:
            # Keep the overall share: the part furthest below its target takes the image.
            want_held = (counts[True] + 1) / (counts[True] + counts[False] + 1) <= held_out_share
            placed[mask.image_id] = want_held
            counts[want_held] += 1
    order = {mask.image_id: index for index, mask in enumerate(masks)}
    chosen = sorted(masks, key=lambda m: order[m.image_id])
    return TruthSplit(
        tuple(m for m in chosen if not placed[m.image_id]),
        tuple(m for m in chosen if placed[m.image_id]),
    )
