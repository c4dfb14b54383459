"""Scores of one config's maps for `wsss compare`: mIoU as `wsss eval` takes it, and where
the ground truth's object and background pixels went (:class:`ObjectCoverage`)."""

from __future__ import annotations

from dataclasses import dataclass

from wsss_core.config import PipelineConfig
from wsss_core.data.images import load_label_map
from wsss_core.data.manifest import Manifest
from wsss_core.metrics import ConfusionMatrix, ObjectCoverage
from wsss_core.stages.common import map_stages
from wsss_core.stages.evaluate_stage import stage_predictions
from wsss_core.stages.image_failures import failed_image_ids
from wsss_core.store.workspace import Workspace


@dataclass
class StageTally:
    """One stage's accumulators over the scored images."""

    confusion: ConfusionMatrix
    coverage: ObjectCoverage
    images: int = 0


def score_maps(
    workspace: Workspace, config: PipelineConfig, manifest: Manifest
) -> dict[str, StageTally]:
    """Every map stage scored on the images with ground truth, shard by shard.

    One shard's ground truth and one batch of maps are held at a time.
    """
    num_labels = len(manifest.class_names) + 1
    tallies = {
        stage: StageTally(ConfusionMatrix(num_labels), ObjectCoverage(num_labels))
        for stage in map_stages(config)
    }
    for shard_index, shard in enumerate(manifest.shards(config.shard_size)):
        failed = failed_image_ids(workspace, map_stages(config), shard_index)
        scored = {r.image_id: r for r in shard if r.gt_uri and r.image_id not in failed}
        if not scored:
            continue
        truth = {image_id: load_label_map(r.gt_uri) for image_id, r in scored.items()}
        for stage, tally in tallies.items():
            seen = 0
            for image_id, prediction in stage_predictions(workspace, config, stage, shard_index):
                if image_id not in truth:
                    continue
                tally.confusion.update(truth[image_id], prediction)
                tally.coverage.update(truth[image_id], prediction, scored[image_id].labels)
                seen += 1
            if seen != len(truth):
                raise ValueError(
                    f"{workspace.shard_path(stage, shard_index)}: holds {seen} of the shard's "
                    f"{len(truth)} images with ground truth; compare again to recompute it"
                )
            tally.images += seen
    return tallies
