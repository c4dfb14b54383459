"""Corrected masks on disk: every version kept, the current one at ``corrected/<image_id>.png``.

A correction is written first as an immutable version file,
``corrected/versions/<image_id>/<hash>.png`` (a leftover one whose row never
made it into ``reviews.parquet`` is unused), then recorded, then copied to
``corrected/<image_id>.png``, the file users open. Everything that reads a
correction goes through :func:`current_corrections`, which takes the version
the record names, so a kill between the steps never shows a mask the record
does not hold; the next pull or publish puts the copies right.

Pipeline runs never write under ``corrected/``. :func:`reviewer_masks` is the
one rule for "the mask a reviewer stands behind", which export, ``wsss tune``
and mask fixing share.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss_core.data.images import label_map_png, voc_palette
from wsss_core.data.manifest import file_sha256
from wsss_core.review.reviews import (
    APPROVED,
    REJECTED,
    Correction,
    ReviewEvent,
    approved_mask_path,
    latest_reviews,
)
from wsss_core.store.atomic import write_bytes_atomic
from wsss_core.store.workspace import Workspace

HASH_CHARS = 16  # of the sha256 in a version's file name
CORRECTED_MASK, APPROVED_MASK = "corrected mask", "approved mask"  # a reviewer mask's source


def corrected_dir(workspace: Workspace) -> Path:
    return workspace.root / "corrected"


def corrected_mask_path(workspace: Workspace, image_id: str) -> Path:
    return corrected_dir(workspace) / f"{image_id}.png"


def version_path(workspace: Workspace, image_id: str, sha256: str) -> Path:
    return corrected_dir(workspace) / "versions" / image_id / f"{sha256[:HASH_CHARS]}.png"


def write_version(workspace: Workspace, image_id: str, label_map: np.ndarray) -> str:
    """Store one corrected mask as a version (a palette PNG); returns the PNG's sha256."""
    data = label_map_png(label_map, voc_palette())
    sha256 = hashlib.sha256(data).hexdigest()
    path = version_path(workspace, image_id, sha256)
    if not path.exists():
        write_bytes_atomic(path, data)
    return sha256


@dataclass(frozen=True)
class CurrentCorrection:
    correction: Correction
    path: Path  # the recorded version's file


def _recorded_version(workspace: Workspace, image_id: str, event: ReviewEvent) -> Path | None:
    """The version file the image's record names, when it has a correction and the file exists."""
    if event.correction is None:
        return None
    path = version_path(workspace, image_id, event.correction.sha256)
    return path if path.exists() else None


def current_corrections(workspace: Workspace) -> dict[str, CurrentCorrection]:
    """Each image's recorded correction whose version file exists."""
    found = {}
    for image_id, event in latest_reviews(workspace).items():
        path = _recorded_version(workspace, image_id, event)
        if path is not None and event.correction is not None:
            found[image_id] = CurrentCorrection(event.correction, path)
    return found


@dataclass(frozen=True)
class ReviewerMask:
    path: Path  # a label map PNG, immutable (a correction's version, or the frozen approval)
    source: str  # CORRECTED_MASK or APPROVED_MASK


def reviewer_masks(workspace: Workspace) -> dict[str, ReviewerMask]:
    """Each image's mask a reviewer stands behind: their correction, else the approved copy.

    A rejected image has none, painted or not: rejection takes an image out of
    every use. An approval whose frozen copy is missing gives none either (it is
    never guessed from the maps).
    """
    found = {}
    for image_id, event in latest_reviews(workspace).items():
        if event.status == REJECTED:
            continue
        corrected = _recorded_version(workspace, image_id, event)
        frozen = approved_mask_path(workspace, image_id)
        if corrected is not None:
            found[image_id] = ReviewerMask(corrected, CORRECTED_MASK)
        elif event.status == APPROVED and frozen.exists():
            found[image_id] = ReviewerMask(frozen, APPROVED_MASK)
    return found


def pipeline_mask_sha256(workspace: Workspace, image_id: str) -> str:
    """The hash of the pipeline's current mask (``masks/<id>.png``); "" when it has none."""
    mask = workspace.mask_path(image_id)
    return file_sha256(mask) if mask.exists() else ""


def made_on_older_mask(workspace: Workspace, image_id: str, correction: Correction) -> bool:
    """Whether a run has changed the pipeline's mask since the image went to the editor (the
    correction stays the reviewer's either way)."""
    return pipeline_mask_sha256(workspace, image_id) != correction.pipeline_sha256


def refresh_corrected_copies(
    workspace: Workspace, corrections: Mapping[str, CurrentCorrection]
) -> int:
    """Make ``corrected/<image_id>.png`` the recorded version (``corrections``, as
    :func:`current_corrections` gives them) for every image; returns changes."""
    changed = 0
    for image_id, current in corrections.items():
        target = corrected_mask_path(workspace, image_id)
        data = current.path.read_bytes()
        if not target.exists() or target.read_bytes() != data:
            write_bytes_atomic(target, data)
            changed += 1
    return changed
