"""Task: mIoU per stage against the ground truth, as a log line and a Prefect table."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import PipelineConfig
from wsss_core.stages.evaluate_stage import Evaluation, evaluate_workspace
from wsss_core.store.workspace import Workspace


@task(name="evaluate", **TASK_DEFAULTS)
def evaluate(
    workspace: Workspace, config: PipelineConfig, model_hash: str | None = None
) -> Evaluation | None:
    logger = get_run_logger()
    evaluation = evaluate_workspace(workspace, config, model_hash)
    if evaluation is None:
        logger.info("no ground truth in this workspace; evaluation skipped")
        return None
    logger.info(f"mIoU over {evaluation.images} images\n{evaluation.table()}")
    if evaluation.pending_shards:
        logger.warning(
            f"{evaluation.pending_shards} shard(s) not scored: their maps are missing or "
            "out of date (see `wsss status`)"
        )
    create_table_artifact(
        key="miou-per-stage",
        table=[
            {
                "stage": s.stage,
                "mIoU": round(s.miou, 4),
                "pixel accuracy": round(s.pixel_accuracy, 4),
                "coverage": round(s.coverage, 4),
            }
            for s in evaluation.scores
        ],
        description=f"mIoU per stage over {evaluation.images} images with ground truth",
    )
    return evaluation
