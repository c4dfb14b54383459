"""The review-sync flow: reviewers' work in FiftyOne -> reviews.parquet (+ manifest labels).

Scheduled hourly in prefect.yaml so the workspace, not the database, stays the record.
"""

from pathlib import Path

from prefect import flow

from tasks.review import sync_reviews
from wsss_core.review.reviews import SyncSummary
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import load_workspace_config


@flow(name="review-sync", persist_result=False)
def review_sync(workspace: str, config_file: str | None = None) -> SyncSummary | None:
    """Record tags (approved / rejected / needs-fix) and label corrections of one workspace."""
    ws = Workspace(Path(workspace))
    ws.require_manifest()
    config = load_workspace_config(ws, config_file)
    with workspace_lock(ws, "review sync"):
        return sync_reviews(ws, config.review)
