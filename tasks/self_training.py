"""Task: train (or reuse) the self-training head before the crf stage's shards."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import PipelineConfig
from wsss_core.stages.self_training_stage import ensure_segmentation_head
from wsss_core.store.workspace import Workspace


@task(name="self-training-head", **TASK_DEFAULTS)
def self_training_head(workspace: Workspace, config: PipelineConfig, model_hash: str) -> float:
    """The segmentation head for this classifier and config, trained once; its seconds."""
    logger = get_run_logger()
    trained, seconds = ensure_segmentation_head(workspace, config, model_hash, logger.info)
    logger.info(
        f"self-training head trained in {seconds:.1f}s" if trained else "self-training head reused"
    )
    return seconds
