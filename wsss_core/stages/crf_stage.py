"""Stage ``crf``: dense-CRF refinement of the grown regions; final masks as PNG too."""

from __future__ import annotations

from wsss_core.config import PipelineConfig
from wsss_core.crf import CrfParams, refine_with_crf
from wsss_core.data.images import load_rgb, save_label_map, voc_palette
from wsss_core.data.manifest import ImageRecord
from wsss_core.probability import anchor_probabilities, probability_map
from wsss_core.stages.common import ShardOutcome, shard_records
from wsss_core.stages.label_stage import run_label_stage
from wsss_core.store.maps import CamRecord, LabelRecord, read_label_shard
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

    outcome = run_label_stage(
        workspace, config, shard_index, "crf", "grown", per_image, show_progress, model_hash
    )
    restore_missing_masks(workspace, config, shard_index)
    return outcome


def restore_missing_masks(workspace: Workspace, config: PipelineConfig, shard_index: int) -> int:
    """Write ``masks/<image_id>.png`` again from the crf shard where the file is gone.

    The PNGs are a copy of the shard's label maps for people and tools. A mask
    deleted while its shard stayed current (by hand, or by an ingest that saw
    the image leave and then come back) would otherwise never return. Costs
    one ``stat`` per image when nothing is missing.
    """
    _, records = shard_records(workspace, config, shard_index)
    missing = {r.image_id for r in records if not workspace.mask_path(r.image_id).exists()}
    path = workspace.shard_path("crf", shard_index)
    if not missing or not path.exists():
        return 0
    palette, restored = voc_palette(), 0
    for row in read_label_shard(path):
        if row.image_id in missing:
            save_label_map(workspace.mask_path(row.image_id), row.labels, palette)
            restored += 1
    return restored
