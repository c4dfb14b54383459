"""How good the masks without a true mask probably are, from the images that have one.

The workspace's current final masks are scored against every true mask
(ground truth, approved masks); that sample's mIoU, with its bootstrap
interval, is the estimate for the rest. It holds as far as the sample is like
the rest: ground truth ingested with a random subset is; approved masks lean
optimistic (reviewers approve the good ones), so the sources are named.

The run report computes it and stores it in ``WS/quality.json`` with the
lineage it was made from, so `wsss status` shows it without reading a map.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from wsss_core.config import PipelineConfig, stage_config_hash
from wsss_core.data.manifest import Manifest, read_manifest
from wsss_core.stages.common import shard_maps_current
from wsss_core.stages.evaluate_stage import stage_predictions
from wsss_core.store.atomic import write_text_atomic
from wsss_core.store.workspace import Workspace
from wsss_core.tuning.scores import estimate, score_images
from wsss_core.tuning.split import MIN_TRUE_MASKS
from wsss_core.tuning.truth import TrueMask, describe_sources, true_masks

QUALITY_FILE = "quality.json"
WORST_CLASSES = 3


@dataclass(frozen=True)
class QualityEstimate:
    true_masks: int  # scored images (with a true mask and a current final mask)
    sources: str  # "60 (60 ground truth)"
    without: int  # usable images without a true mask: what the estimate is for
    miou: float | None  # None: no true mask, the quality is unknown
    low: float | None
    high: float | None
    worst: tuple[tuple[str, float], ...]  # the lowest-IoU classes in the sample
    lineage: str  # config, model and true-mask set it was made from

    def lines(self) -> list[str]:
        if self.miou is None:
            return [
                "quality of the masks: unknown (no image has a true mask; ingest ground "
                "truth for a sample, or approve masks in review; `wsss tune` needs "
                f"{MIN_TRUE_MASKS})"
            ]
        worst = ", ".join(f"{name} {iou:.3f}" for name, iou in self.worst)
        return [
            f"estimated mIoU of the {self.without} image(s) without a true mask: "
            f"{self.miou:.3f} [{self.low:.3f}, {self.high:.3f}] (90% interval, from "
            f"{self.sources} scored image(s))",
            f"  worst classes in the sample: {worst}",
        ]


def quality_lineage(config: PipelineConfig, model_hash: str, masks: Sequence[TrueMask]) -> str:
    """What the estimate depends on: the final masks' lineage and the true masks."""
    digest = hashlib.sha256()
    digest.update(f"{model_hash}|{stage_config_hash(config, 'crf')}".encode())
    for mask in masks:
        digest.update(f"|{mask.image_id}:{mask.path}".encode())
    return digest.hexdigest()[:16]


def estimate_quality(
    workspace: Workspace, config: PipelineConfig, model_hash: str
) -> QualityEstimate:
    """Score the current final masks against every true mask (shards up to date only)."""
    manifest = read_manifest(workspace)
    masks = true_masks(workspace, manifest)
    truth = {mask.image_id: mask.path for mask in masks}
    predictions = (
        prediction
        for index, shard in enumerate(manifest.shards(config.shard_size))
        if shard and shard_maps_current(workspace, config, model_hash, index, shard)
        for prediction in stage_predictions(workspace, config, "crf", index)
    )
    scores = score_images(predictions, truth, len(manifest.class_names) + 1)
    lineage = quality_lineage(config, model_hash, masks)
    without = len(manifest.records) - len(masks)
    if not scores.image_ids:
        return QualityEstimate(0, describe_sources(masks), without, None, None, None, (), lineage)
    result = estimate(scores)
    named = [
        (name, iou)
        for name, iou in zip(manifest.class_names, result.iou_per_label[1:], strict=True)
        if not math.isnan(iou)
    ]
    worst = tuple(sorted(named, key=lambda item: item[1])[:WORST_CLASSES])
    scored_ids = set(scores.image_ids)
    scored = [mask for mask in masks if mask.image_id in scored_ids]
    return QualityEstimate(
        len(scores.image_ids),
        describe_sources(scored),
        without,
        result.miou,
        result.low,
        result.high,
        worst,
        lineage,
    )


def save_quality(workspace: Workspace, quality: QualityEstimate) -> None:
    write_text_atomic(workspace.root / QUALITY_FILE, json.dumps(asdict(quality), indent=1))


def saved_quality(
    workspace: Workspace, config: PipelineConfig, model_hash: str | None, manifest: Manifest
) -> QualityEstimate | None:
    """The last run's estimate while its lineage still holds, else None (``manifest``:
    the workspace's, which the caller has read)."""
    path = workspace.root / QUALITY_FILE
    if model_hash is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        data["worst"] = tuple(tuple(item) for item in data["worst"])
        saved = QualityEstimate(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    current = quality_lineage(config, model_hash, true_masks(workspace, manifest))
    return saved if saved.lineage == current else None
