"""Task: train the classifier, or reuse the workspace's model when its inputs are unchanged."""

from __future__ import annotations

from prefect import get_run_logger, task
from tqdm import tqdm

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import PipelineConfig
from wsss_core.model.reuse import TrainOutcome, train_or_reuse
from wsss_core.store.workspace import Workspace


@task(name="train-classifier", **TASK_DEFAULTS)
def train(workspace: Workspace, config: PipelineConfig) -> TrainOutcome:
    logger = get_run_logger()

    def log(message: str) -> None:
        logger.info(message)
        tqdm.write(message)  # per-epoch metrics on the console too, between progress bars

    outcome = train_or_reuse(workspace, config, log=log)
    verb = "trained" if outcome.trained else "reused"
    logger.info(f"classifier {verb}: validation mAP {outcome.val_map:.4f}")
    return outcome
