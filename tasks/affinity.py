"""Tasks: train (or reuse) the affinity stage's boundary head; walk one shard's CAMs."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks._runtime import TASK_DEFAULTS
from tasks._shard import shard_task
from wsss_core.config import PipelineConfig
from wsss_core.stages.affinity_stage import ensure_head, run_affinity_shard
from wsss_core.store.workspace import Workspace

affinity_shard = shard_task("affinity-shard", run_affinity_shard)


@task(name="affinity-head", **TASK_DEFAULTS)
def affinity_head(workspace: Workspace, config: PipelineConfig, model_hash: str) -> float:
    """The boundary head for this classifier and config, trained once; its training seconds."""
    logger = get_run_logger()
    trained, seconds = ensure_head(workspace, config, model_hash, progress=logger.info)
    logger.info(f"affinity head trained in {seconds:.1f}s" if trained else "affinity head reused")
    return seconds
