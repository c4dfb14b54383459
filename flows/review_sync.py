"""The review-sync flow: reviewers' work in FiftyOne -> reviews.parquet (+ manifest labels).

Scheduled hourly in prefect.yaml so the workspace, not the database, stays the record.
"""

from pathlib import Path

from prefect import flow

from tasks.review import sync_reviews
from wsss_core.config import load_config
from wsss_core.review.reviews import SyncSummary
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace


@flow(name="review-sync", persist_result=False)
def review_sync(workspace: str, config_file: str | None = None) -> SyncSummary | None:
    """Record tags (approved / rejected / needs-fix) and label corrections of one workspace."""
    config = load_config(config_file)
    ws = Workspace(Path(workspace))
    ws.require_manifest()
    with workspace_lock(ws, "review sync"):
        return sync_reviews(ws, config.review)
