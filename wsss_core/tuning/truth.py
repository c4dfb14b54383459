"""The workspace's true masks: ground truth, then reviewers' corrected and approved masks.

Ground truth (the manifest's ``gt_uri``) wins where several exist, then a
mask a reviewer painted (``wsss review fix``), then an approved one. An approved
mask is the pseudo-mask a reviewer accepted as it was (``approved/<id>.png``,
frozen when approved), so it is true by the reviewer's judgement; it favours
the settings that made it, which is why sources are counted apart in every
report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from wsss_core.data.manifest import Manifest
from wsss_core.review.corrections import reviewer_masks
from wsss_core.store.workspace import Workspace

GROUND_TRUTH = "ground truth"  # the other sources: corrections.CORRECTED_MASK, APPROVED_MASK


@dataclass(frozen=True)
class TrueMask:
    image_id: str
    path: str  # a label map PNG (0 background, k + 1 class k, 255 ignore)
    source: str  # GROUND_TRUTH, or a ReviewerMask's source
    labels: tuple[int, ...]  # the image's labelled classes (for stratifying)


def true_masks(workspace: Workspace, manifest: Manifest) -> list[TrueMask]:
    """Every usable image's true mask, in manifest order."""
    reviewed = reviewer_masks(workspace)
    found = []
    for record in manifest.records:
        if record.gt_uri:
            found.append(TrueMask(record.image_id, record.gt_uri, GROUND_TRUTH, record.labels))
        elif record.image_id in reviewed:
            mask = reviewed[record.image_id]
            found.append(TrueMask(record.image_id, str(mask.path), mask.source, record.labels))
    return found


def describe_sources(masks: list[TrueMask]) -> str:
    """``60 (52 ground truth, 8 approved mask)``."""
    counts = Counter(mask.source for mask in masks)
    parts = ", ".join(f"{count} {source}" for source, count in sorted(counts.items()))
    return f"{len(masks)} ({parts})" if masks else "0"
