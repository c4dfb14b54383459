"""Stage ``crf``: dense-CRF refinement of the grown regions; final masks as PNG too."""

from __future__ import annotations

from wsss_core.config import PipelineConfig
from wsss_core.crf import CrfParams, refine_with_crf
from wsss_core.data.images import load_rgb, save_label_map, voc_palette
from wsss_core.data.manifest import ImageRecord
from wsss_core.probability import anchor_probabilities, probability_map
from wsss_core.stages.common import ShardOutcome
from wsss_core.stages.label_stage import run_label_stage
from wsss_core.store.maps import CamRecord, LabelRecord
from wsss_core.store.workspace import Workspace


def crf_params(config: PipelineConfig) -> CrfParams:
    c = config.crf
    return CrfParams(
        iterations=c.iterations,
        gaussian_sxy=c.gaussian_sxy,
        gaussian_compat=c.gaussian_compat,
        bilateral_sxy=c.bilateral_sxy,
        bilateral_srgb=c.bilateral_srgb,
        bilateral_compat=c.bilateral_compat,
    )


def run_crf_shard(
    workspace: Workspace,
    config: PipelineConfig,
    shard_index: int,
    show_progress: bool = False,
    model_hash: str | None = None,
) -> ShardOutcome:
    params, palette = crf_params(config), voc_palette()

    def per_image(record: ImageRecord, cams: CamRecord, grown: LabelRecord | None) -> LabelRecord:
        assert grown is not None
        # Grown regions become confident unaries; unknown pixels keep the CAM probabilities.
        probs = probability_map(cams.cams, background_power=config.grow.background_power)
        unary = anchor_probabilities(
            probs, grown.labels, cams.class_ids, confidence=config.crf.anchor_confidence
        )
        result = refine_with_crf(
            load_rgb(record.uri), unary, cams.class_ids, params, config.crf.min_confidence
        )
        save_label_map(workspace.mask_path(record.image_id), result.labels, palette)
        return LabelRecord(record.image_id, result.labels, result.confidence)

    return run_label_stage(
        workspace, config, shard_index, "crf", "grown", per_image, show_progress, model_hash
    )
