"""The crf stage's first pass: each image's mask from its CAMs alone, and its keeping.

:func:`first_pass_mask` is the crf stage's mask without self-training: the
CRF at each candidate background power, the best outlined result kept
(``wsss_core/background.py``), then no labelled class left vanished
(``wsss_core/recovery.py``; restored from the CRF of the affinity stage's
walked maps when that stage is on, then from its grown region).

With self-training on, the head learns from the first passes of its training
images before any final mask can be made, and the crf stage needs the same
first passes again. So the head's training writes them beside the head
(:func:`write_first_passes`, ``models/segmentation/<lineage>.first-passes.parquet``)
and the stage takes an image's from there (:class:`KeptFirstPasses`) instead
of computing it twice: about a third of the stage's work for those images.
The head's lineage holds every setting a first pass depends on; each row
also holds a digest of the image's own inputs (the file's sha256, its CAMs,
its grown region), so a row is used only for exactly the maps it was made
from. A first pass that restored a class with the affinity stage on is not
kept: it may come from the walk, made by a head the digest does not name (tune
and compare train their own). A missing, unreadable or foreign file only costs
the recomputation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsss_core.background import refine_best_background
from wsss_core.config import CrfConfig
from wsss_core.crf import ImageCrf
from wsss_core.data.manifest import ImageRecord
from wsss_core.probability import probability_map
from wsss_core.recovery import restore_vanished_classes
from wsss_core.store.maps import (
    CamRecord,
    LabelRecord,
    Lineage,
    label_record,
    read_lineage,
    write_label_shard,
)
from wsss_core.store.parquet_io import read_metadata, read_table

# Walked maps are divided by their maximum, so they read as probabilities as they are.
WALK_BACKGROUND_POWER = 1.0

# The file is a label table (``store/maps.py``) of this stage name; its lineage is the
# head's, and its ``inputs`` metadata each image's digest (:func:`inputs_digest`).
FIRST_PASSES_STAGE = "first-passes"


@dataclass(frozen=True)
class FirstPass:
    """An image's mask from its CAMs alone: the crf stage's result without self-training."""

    labels: np.ndarray  # uint8 [H, W]
    # float32 [H, W]; None when read back from the head's file (the second pass makes the final's)
    confidence: np.ndarray | None
    recovered: tuple[int, ...]  # classes restored after the CRF emptied them
    background_power: float


def first_pass_mask(
    image: np.ndarray,
    cams: CamRecord,
    grown: np.ndarray,
    walked: Callable[[], np.ndarray] | None,
    settings: CrfConfig,
    crf: ImageCrf | None = None,
) -> FirstPass:
    """The CRF at each candidate background power, the best outlined one, vanished classes back.

    ``walked``: gives the image's affinity maps when that stage is on (they
    restore a vanished class before ``grown`` does); called only when a class
    vanished, so most images never read them. ``crf``: the image's CRF built
    with ``settings``, when the caller refines the image again (the second pass).
    """
    crf = crf or ImageCrf(image, settings)  # the background choice and the walk share it
    anchor = None if settings.anchor_confidence is None else (grown, settings.anchor_confidence)
    choice = refine_best_background(
        image,
        cams.cams,
        cams.class_ids,
        settings.background_powers,
        settings,
        settings.min_confidence,
        anchor,
        crf,
        settings.background_score,
    )

    def walk_region() -> np.ndarray:
        assert walked is not None
        walk = probability_map(walked(), WALK_BACKGROUND_POWER)
        return crf.refine(walk, cams.class_ids).labels

    labels, recovered = restore_vanished_classes(
        choice.result.labels,
        grown,
        cams.class_ids,
        settings.min_kept_share,
        walk_region if walked is not None else None,
    )
    return FirstPass(labels, choice.result.confidence, recovered, choice.background_power)


def inputs_digest(record: ImageRecord, cams: CamRecord, grown: np.ndarray) -> str:
    """What an image's first pass is made from, beyond the settings: pixels, CAMs, grown region.

    The walked maps are not in it: a first pass that read them is never kept.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(record.sha256.encode())
    digest.update(repr((cams.class_ids, cams.cams.shape, grown.shape)).encode())
    digest.update(np.ascontiguousarray(cams.cams, np.float32).tobytes())
    digest.update(np.ascontiguousarray(grown, np.uint8).tobytes())
    return digest.hexdigest()


def first_passes_path(head_path: Path) -> Path:
    """The first passes a head at ``head_path`` learnt from: ``<lineage>.first-passes.parquet``."""
    return head_path.with_name(f"{head_path.stem}.first-passes.parquet")


def write_first_passes(
    path: Path, head_lineage: str, passes: Iterable[tuple[str, str, FirstPass]]
) -> None:
    """(image id, inputs digest, first pass) rows, atomically; written before the head itself."""
    rows = list(passes)
    records = [LabelRecord(i, p.labels, None, p.recovered, p.background_power) for i, _, p in rows]
    inputs = {image_id: digest for image_id, digest, _ in rows}
    write_label_shard(path, FIRST_PASSES_STAGE, records, _lineage(head_lineage), inputs)


def _lineage(head_lineage: str) -> Lineage:
    # The head's lineage names the classifier and every setting; the images are in ``inputs``.
    return Lineage(config_hash=head_lineage, model_hash="", source_hash="")


class KeptFirstPasses:
    """The first passes a head learnt from, read at the first lookup, decoded one at a time."""

    def __init__(self, path: Path, head_lineage: str) -> None:
        self.path, self.lineage = path, _lineage(head_lineage)
        self._rows: dict[str, tuple[str | None, dict[str, Any]]] | None = None  # id -> digest, row

    def get(self, record: ImageRecord, cams: CamRecord, grown: np.ndarray) -> FirstPass | None:
        """The image's kept first pass if it was made from exactly these inputs, else None."""
        if self._rows is None:
            self._rows = self._read()
        digest, row = self._rows.get(record.image_id, (None, None))
        if row is None or digest != inputs_digest(record, cams, grown):
            return None
        try:
            kept = label_record(row)
        except (KeyError, ValueError):
            return None  # a row of another shape, or a damaged cell: computed again
        return FirstPass(kept.labels, None, kept.recovered or (), float(kept.background_power))

    def _read(self) -> dict[str, tuple[str | None, dict[str, Any]]]:
        try:
            if read_lineage(self.path) != self.lineage:
                return {}  # none kept (a head from before them), or another head's
            facts = read_metadata(self.path)
            table = read_table(self.path)
        except (FileNotFoundError, ValueError, OSError):
            return {}  # a damaged file: computed again
        if facts.get("stage") != FIRST_PASSES_STAGE or "image_id" not in table.column_names:
            return {}
        digests = facts.get("inputs") or {}
        return {row["image_id"]: (digests.get(row["image_id"]), row) for row in table.to_pylist()}
