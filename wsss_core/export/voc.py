"""Export label maps in the PASCAL VOC segmentation layout.

``OUT/SegmentationClass/<image_id>.png`` palette PNGs (0 background, k + 1
class k in manifest order, 255 ignore, VOC colours) and ``OUT/classes.txt``
(``background`` then the class names, one a line, so line n is value n).
Rejected images are never exported; with ``only_approved`` only approved ones
are, from their frozen masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss_core.config import PipelineConfig
from wsss_core.data.images import load_label_map, save_label_map, voc_palette
from wsss_core.data.manifest import read_manifest
from wsss_core.review.reviews import APPROVED, REJECTED, approved_mask_path, latest_reviews
from wsss_core.stages.evaluate_stage import thresholded_cam
from wsss_core.store.maps import read_cam_shard, read_label_shard
from wsss_core.store.workspace import Workspace

EXPORT_STAGES = ("cam", "seeds", "grown", "crf")


@dataclass(frozen=True)
class ExportSummary:
    exported: int
    skipped_rejected: int
    skipped_unapproved: int
    missing: int
    out_dir: Path


def _stage_maps(workspace: Workspace, config: PipelineConfig, stage: str, shard: int):
    path = workspace.shard_path(stage, shard)
    if not path.exists():
        return {}
    if stage == "cam":
        return {r.image_id: thresholded_cam(r, config.cam.threshold) for r in read_cam_shard(path)}
    return {r.image_id: r.labels for r in read_label_shard(path)}


def export_voc(
    workspace: Workspace,
    config: PipelineConfig,
    out_dir: Path,
    stage: str = "crf",
    only_approved: bool = False,
) -> ExportSummary:
    if stage not in EXPORT_STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {EXPORT_STAGES}")
    manifest = read_manifest(workspace)
    reviews = latest_reviews(workspace)
    target = Path(out_dir) / "SegmentationClass"
    target.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    exported = rejected = unapproved = missing = 0
    for shard_index, records in enumerate(manifest.shards(config.shard_size)):
        maps = _stage_maps(workspace, config, stage, shard_index)
        for record in records:
            status = reviews[record.image_id].status if record.image_id in reviews else None
            if status == REJECTED:
                rejected += 1
                continue
            if only_approved and status != APPROVED:
                unapproved += 1
                continue
            frozen = approved_mask_path(workspace, record.image_id)
            labels: np.ndarray | None
            if status == APPROVED and stage == "crf" and frozen.exists():
                labels = load_label_map(frozen)
            else:
                labels = maps.get(record.image_id)
            if labels is None:
                missing += 1
                continue
            save_label_map(target / f"{record.image_id}.png", labels, palette)
            exported += 1
    names = ["background", *manifest.class_names]
    (Path(out_dir) / "classes.txt").write_text("\n".join(names) + "\n")
    return ExportSummary(exported, rejected, unapproved, missing, Path(out_dir))
