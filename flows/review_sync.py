"""The review-sync flow: reviewers' work in FiftyOne -> reviews.parquet (+ manifest labels).

Scheduled hourly in prefect.yaml so the workspace, not the database, stays the record.

No ``from __future__ import annotations`` here: Prefect reads the flow's
parameter annotations at run time to validate and to build deployment schemas.
"""

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from tasks.review import sync_reviews
from wsss_core.config import PipelineConfig
from wsss_core.review.reviews import SyncSummary
from wsss_core.store.lock import WorkspaceLocked, workspace_lock
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import flow_config


@flow(name="review-sync", persist_result=False)
def review_sync(
    workspace: str,
    config_file: str | None = None,
    skip_when_busy: bool = False,
    config: PipelineConfig | None = None,
) -> SyncSummary | State | None:
    """Record tags (approved / rejected / needs-fix) and label corrections of one workspace.

    Args:
        workspace: the workspace directory (must hold a manifest).
        config_file: YAML with any subset of the config sections, layered over
            the workspace's saved config (``config.yaml``); neither: the saved
            config, else the defaults.
        skip_when_busy: when another run holds the workspace, end Completed with
            a "skipped" message instead of Failed. For schedules: a pipeline run
            syncs reviews itself, and the reviewers' edits wait safely in FiftyOne
            for the next sync.
        config: the validated config instead of ``config_file`` (the CLI passes it).
    """
    ws = Workspace(Path(workspace))
    ws.require_manifest()
    config = flow_config(ws, config_file, config)
    try:
        with workspace_lock(ws, "review sync"):
            return sync_reviews(ws, config.review)
    except WorkspaceLocked as busy:
        if not skip_when_busy:
            raise
        get_run_logger().warning(f"review sync skipped: {busy}")
        return Completed(message=f"skipped: {busy}")
