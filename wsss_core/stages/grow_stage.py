"""Stage ``grown``: DSRG seeded region growing over the CAM probability map.

The probabilities come from the CAMs the seeds came from: pooled over
superpixels when ``seeds.superpixels`` is on.
"""

from __future__ import annotations

from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import ImageRecord
from wsss_core.grow import grow_regions
from wsss_core.probability import probability_map
from wsss_core.stages.common import ShardOutcome
from wsss_core.stages.label_stage import run_label_stage
from wsss_core.stages.pooled_cams import seed_stage_cams
from wsss_core.store.maps import CamRecord, LabelRecord
from wsss_core.store.workspace import Workspace


def run_grow_shard(
    workspace: Workspace,
    config: PipelineConfig,
    shard_index: int,
    show_progress: bool = False,
    model_hash: str | None = None,
) -> ShardOutcome:
    settings = config.grow

    def per_image(record: ImageRecord, cams: CamRecord, seeds: LabelRecord | None) -> LabelRecord:
        assert seeds is not None
        pooled = seed_stage_cams(record, cams, config.seeds)
        probs = probability_map(pooled, background_power=settings.background_power)
        grown = grow_regions(
            seeds.labels,
            probs,
            cams.class_ids,
            fg_threshold=settings.fg_threshold,
            bg_threshold=settings.bg_threshold,
        )
        return LabelRecord(record.image_id, grown)

    return run_label_stage(
        workspace, config, shard_index, "grown", "seeds", per_image, show_progress, model_hash
    )
