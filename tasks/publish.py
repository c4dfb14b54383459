"""Task: publish images, labels, stage masks and scores to the FiftyOne review dataset."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import PipelineConfig
from wsss_core.review.fiftyone_adapter import PublishSummary, publish
from wsss_core.store.workspace import Workspace


@task(name="publish-review", retries=1, **TASK_DEFAULTS)
def publish_review(workspace: Workspace, config: PipelineConfig) -> PublishSummary:
    summary = publish(
        workspace,
        config.review,
        shard_size=config.shard_size,
        with_affinity=config.affinity.enabled,
    )
    get_run_logger().info(
        f"FiftyOne dataset {summary.dataset_name!r}: {summary.added} added, "
        f"{summary.updated} updated"
    )
    return summary
