"""Export label maps in the PASCAL VOC segmentation layout.

``OUT/SegmentationClass/<image_id>.png`` palette PNGs (0 background, k + 1
class k in manifest order, 255 ignore, VOC colours) and ``OUT/classes.txt``
(``background`` then the class names, one a line, so line n is value n).
Rejected images are never exported. For the ``crf`` stage a reviewer's mask
wins over the pipeline's: a corrected mask (``wsss review fix``), else an
approved image's frozen mask, whatever the maps hold now; with
``only_approved`` only those are exported. A map a run would not keep as it
is, made from other pixels or labels than the manifest now has (a reviewer
fixed the labels, the image changed) or with another config or model (a
retrain, a config change, a shard that failed since), is not exported
either: it is counted as outdated. Files of an earlier export to the same
folder that no longer qualify are removed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss_core.config import PipelineConfig
from wsss_core.data.images import load_label_map, save_label_map, voc_palette
from wsss_core.data.manifest import read_manifest
from wsss_core.review.corrections import reviewer_masks
from wsss_core.review.reviews import APPROVED, REJECTED, latest_reviews
from wsss_core.stages.common import current_model_hash, expected_lineage, input_hashes
from wsss_core.stages.evaluate_stage import thresholded_cam
from wsss_core.store.atomic import write_text_atomic
from wsss_core.store.maps import CAM_TABLE_STAGES, read_cam_shard, read_label_shard, reusable_ids
from wsss_core.store.parquet_io import read_metadata
from wsss_core.store.workspace import ALL_MAP_STAGES, Workspace

EXPORT_STAGES = ALL_MAP_STAGES  # per-class maps (cam, affinity) exported thresholded


@dataclass(frozen=True)
class ExportSummary:
    exported: int
    skipped_rejected: int
    skipped_unapproved: int
    missing: int
    out_dir: Path
    outdated: int = 0  # maps made from other pixels, labels, config or model than now


def _model_hash(workspace: Workspace) -> str | None:
    """The classifier's hash; None without one (no map is current then, as `wsss status` says)."""
    try:
        return current_model_hash(workspace)
    except FileNotFoundError:
        return None


def _current_ids(
    path: Path, stage: str, config: PipelineConfig, model: str | None, inputs: dict[str, str]
) -> set[str]:
    """Images of one shard file whose maps a run would keep: the stages' rule for reused rows.

    That is this config's and model's lineage for the file, and each image's
    own input hash unchanged (the shard-wide source hash is not compared: the
    rows of a shard's unchanged images stay valid when another image changed).
    """
    if model is None:
        return set()
    stored = read_metadata(path).get("inputs") or {}
    candidates = {image_id: inputs[image_id] for image_id in stored if image_id in inputs}
    lineage = expected_lineage(config, stage, model, ())  # its source hash is not compared
    return set(reusable_ids(path, lineage, candidates))


def _stage_maps(
    workspace: Workspace, config: PipelineConfig, stage: str, inputs: dict[str, str]
) -> Iterator[tuple[str, np.ndarray, bool]]:
    """(image id, label map, whether it is current) for every image, shard by shard.

    Reads every ``part-*`` file, so it does not depend on the shard size in
    ``config``. ``inputs``: the manifest's input hash of every usable image.
    """
    model = _model_hash(workspace)
    for path in sorted(workspace.maps_dir(stage).glob("part-*.parquet")):
        current = _current_ids(path, stage, config, model, inputs)
        if stage in CAM_TABLE_STAGES:
            for record in read_cam_shard(path):
                labels = thresholded_cam(record, config.cam.threshold)
                yield record.image_id, labels, record.image_id in current
        else:
            for record in read_label_shard(path):
                yield record.image_id, record.labels, record.image_id in current


def export_voc(
    workspace: Workspace,
    config: PipelineConfig,
    out_dir: Path,
    stage: str = "crf",
    only_approved: bool = False,
) -> ExportSummary:
    """Write the masks; files of an earlier export that no longer qualify are removed."""
    if stage not in EXPORT_STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {EXPORT_STAGES}")
    manifest = read_manifest(workspace)
    current_inputs = input_hashes(manifest.records)
    usable = set(current_inputs)
    reviews = latest_reviews(workspace)
    reviewed = reviewer_masks(workspace) if stage == "crf" else {}
    target = Path(out_dir) / "SegmentationClass"
    target.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    written: set[str] = set()
    seen: set[str] = set()
    rejected = unapproved = outdated = 0
    stage_maps = _stage_maps(workspace, config, stage, current_inputs)
    without_map = ((image_id, None, False) for image_id in sorted(reviewed))  # once seen: skipped
    for image_id, labels, is_current in itertools.chain(stage_maps, without_map):
        if image_id not in usable or image_id in seen:
            continue
        seen.add(image_id)
        status = reviews[image_id].status if image_id in reviews else None
        if status == REJECTED:
            rejected += 1
            continue
        if image_id in reviewed:  # painted or approved: theirs, whatever the maps hold now
            labels = load_label_map(reviewed[image_id].path)
        elif only_approved and status != APPROVED:
            unapproved += 1
            continue
        elif status == APPROVED and stage == "crf":
            continue  # approved without a frozen mask: counted as missing, never guessed
        elif not is_current:
            outdated += 1
            continue
        save_label_map(target / f"{image_id}.png", labels, palette)
        written.add(image_id)
    for stale in target.glob("*.png"):
        if stale.stem not in written:
            stale.unlink()
    names = ["background", *manifest.class_names]
    write_text_atomic(Path(out_dir) / "classes.txt", "\n".join(names) + "\n")
    missing = len(usable) - len(written) - rejected - unapproved - outdated
    return ExportSummary(len(written), rejected, unapproved, missing, Path(out_dir), outdated)
