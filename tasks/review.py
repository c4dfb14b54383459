"""Task: pull reviewers' tags and label corrections into the workspace record."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import ReviewConfig
from wsss_core.review.fiftyone_adapter import dataset_exists, observed_reviews
from wsss_core.review.reviews import SyncSummary, record_reviews
from wsss_core.store.workspace import Workspace


@task(name="review-sync", retries=1, **TASK_DEFAULTS)
def sync_reviews(workspace: Workspace, config: ReviewConfig) -> SyncSummary | None:
    """None when nothing was published yet (no dataset, so nothing to pull)."""
    logger = get_run_logger()
    if not dataset_exists(workspace, config):
        logger.info("no review dataset yet; nothing to sync")
        return None
    summary = record_reviews(workspace, observed_reviews(workspace, config))
    logger.info(
        f"reviews: {summary.changed} changed; now {summary.approved} approved, "
        f"{summary.rejected} rejected, {summary.needs_fix} needs-fix; "
        f"{summary.label_corrections} label correction(s)"
    )
    return summary
