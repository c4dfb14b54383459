"""Task: train the classifier, or reuse the workspace's model when its inputs are unchanged."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import PipelineConfig
from wsss_core.model.reuse import TrainOutcome, train_or_reuse
from wsss_core.store.workspace import Workspace


@task(name="train-classifier", **TASK_DEFAULTS)
def train(workspace: Workspace, config: PipelineConfig) -> TrainOutcome:
    logger = get_run_logger()
    outcome = train_or_reuse(workspace, config, log=logger.info)
    verb = "trained" if outcome.trained else "reused"
    logger.info(f"classifier {verb}: validation mAP {outcome.val_map:.4f}")
    return outcome
