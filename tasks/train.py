"""Task: train the classifier, resume an interrupted run, or reuse an up-to-date model."""

from __future__ import annotations

from prefect import get_run_logger, task
from tqdm import tqdm

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import PipelineConfig
from wsss_core.model.reuse import TrainOutcome, train_or_reuse
from wsss_core.store.workspace import Workspace


@task(name="train-classifier", **TASK_DEFAULTS)
def train(
    workspace: Workspace,
    config: PipelineConfig,
    resume: bool | None = None,
    force: bool = False,
    keep_current: bool = False,
) -> TrainOutcome:
    """``resume``: None continues a matching interrupted run, True requires one, False never.

    ``keep_current``: reuse a finished classifier of the same train config and
    classes even when the training images changed since (scheduled runs).
    """
    logger = get_run_logger()

    def log(message: str) -> None:
        logger.info(message)
        tqdm.write(message)  # per-epoch metrics on the console too, between progress bars

    outcome = train_or_reuse(
        workspace, config, log=log, force=force, resume=resume, keep_current=keep_current
    )
    verb = "trained" if outcome.trained else "reused"
    logger.info(f"classifier {verb}: validation mAP {outcome.val_map:.4f}")
    return outcome
