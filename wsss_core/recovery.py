"""No labelled class vanishes silently from a final mask.

Every image's final mask is checked against its image-level labels: a
labelled class that the CRF left with no pixel, or with far less area than
the grown region (DSRG) gave it, was flooded by background or by another
class. Its grown region is put back (on pixels the CRF made background or
unknown; another class's pixels are not taken), and the image is reported:
the run report and the CLI count such images, and review flags them
(``mask-recovered``) and puts them first in its queue. The grown region is the
fallback because it is what the seeds and growing were confident of: every
labelled class has one (its CAM peaks at 1, above the seed threshold) unless
a stronger class covers it everywhere. With the affinity stage on, the
class's region in the CRF of the walked maps comes first: it spans the
object, the grown region only its confident core (:func:`restore_vanished_classes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from wsss_core.probability import UNKNOWN, check_class_ids

__all__ = ["recover_vanished_classes", "restore_vanished_classes"]


def recover_vanished_classes(
    labels: np.ndarray,
    grown: np.ndarray,
    class_ids: Sequence[int],
    min_kept_share: float,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The mask with vanished classes' grown regions restored, and those class ids.

    A class counts as vanished when its area in ``labels`` is below
    ``min_kept_share`` times its area in ``grown`` (so a class absent from both
    is left alone). ``labels`` is not modified.
    """
    if not 0.0 <= min_kept_share <= 1.0:
        raise ValueError(f"min_kept_share must lie in [0, 1], got {min_kept_share}")
    if labels.shape != grown.shape:
        raise ValueError(f"labels shape {labels.shape} does not match grown {grown.shape}")
    out, recovered = labels, []
    free = (labels == 0) | (labels == UNKNOWN)
    for class_id in check_class_ids(class_ids):
        value = class_id + 1
        region = grown == value
        reference = int(region.sum())
        if reference and (labels == value).sum() < min_kept_share * reference:
            if out is labels:
                out = labels.copy()
            out[region & free] = value
            recovered.append(class_id)
    return out, tuple(recovered)


def restore_vanished_classes(
    labels: np.ndarray,
    grown: np.ndarray,
    class_ids: Sequence[int],
    min_kept_share: float,
    walk_region: Callable[[], np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The final mask with every vanished class restored, and the restored class ids.

    Vanished is judged against ``grown``. ``walk_region`` (called only when a
    class vanished) gives a label map from the affinity walk: each vanished
    class is restored from it first (judged against its area there), then
    from ``grown`` if it is still missing.
    """
    restored, recovered = recover_vanished_classes(labels, grown, class_ids, min_kept_share)
    if not recovered or walk_region is None:
        return restored, recovered
    restored, first = recover_vanished_classes(labels, walk_region(), class_ids, min_kept_share)
    restored, second = recover_vanished_classes(restored, grown, class_ids, min_kept_share)
    return restored, tuple(sorted({*recovered, *first, *second}))
