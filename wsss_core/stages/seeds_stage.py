"""Stage ``seeds``: DSRG seed cues from the CAMs (pooled over superpixels when on)."""

from __future__ import annotations

from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import ImageRecord
from wsss_core.seeds import make_seeds
from wsss_core.stages.common import ShardOutcome
from wsss_core.stages.label_stage import run_label_stage
from wsss_core.stages.pooled_cams import seed_stage_cams
from wsss_core.store.maps import CamRecord, LabelRecord
from wsss_core.store.workspace import Workspace


def run_seeds_shard(
    workspace: Workspace,
    config: PipelineConfig,
    shard_index: int,
    show_progress: bool = False,
    model_hash: str | None = None,
) -> ShardOutcome:
    settings = config.seeds

    def per_image(record: ImageRecord, cams: CamRecord, _: LabelRecord | None) -> LabelRecord:
        seeds = make_seeds(
            seed_stage_cams(record, cams, settings),
            cams.class_ids,
            fg_threshold=settings.fg_threshold,
            bg_threshold=settings.bg_threshold,
            border_background=settings.border_background,
        )
        return LabelRecord(record.image_id, seeds)

    return run_label_stage(
        workspace, config, shard_index, "seeds", None, per_image, show_progress, model_hash
    )
