"""Tasks: ingest a source (or the demo dataset) into the workspace manifest."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import DemoConfig, ReviewConfig
from wsss_core.data.ingest import ingest, reingest
from wsss_core.data.sources import IngestOptions, IngestSummary
from wsss_core.review.reviews import apply_label_corrections
from wsss_core.store.workspace import Workspace


def _finish(workspace: Workspace, summary: IngestSummary) -> IngestSummary:
    """Re-apply reviewers' label corrections (a source re-read has the original labels), log."""
    logger = get_run_logger()
    for line in summary.lines():
        logger.info(line)
    corrected = apply_label_corrections(workspace)
    if corrected:
        logger.info(f"{corrected} image(s) keep their reviewer-corrected labels")
    return summary


@task(name="ingest-demo", retries=1, **TASK_DEFAULTS)
def ingest_demo(workspace: Workspace, demo: DemoConfig) -> IngestSummary:
    """Generate the demo dataset under ``<workspace>/demo-source`` and ingest it."""
    summary = ingest("demo", workspace.root / "demo-source", workspace, demo=demo)
    return _finish(workspace, summary)


@task(name="reingest", retries=1, **TASK_DEFAULTS)
def reingest_source(workspace: Workspace, demo: DemoConfig, review: ReviewConfig) -> IngestSummary:
    """Read the workspace's recorded source again: picks up images added since the last run."""
    return _finish(workspace, reingest(workspace, demo=demo, review=review))


@task(name="ingest-source", retries=0, **TASK_DEFAULTS)
def ingest_source(
    workspace: Workspace,
    kind: str,
    path: str | None,
    options: IngestOptions,
    demo: DemoConfig | None = None,
    review: ReviewConfig | None = None,
) -> IngestSummary:
    """Any source kind (voc, coco, folder, fiftyone, demo); merges into an existing manifest."""
    summary = ingest(kind, path, workspace, options, demo=demo, review=review)
    return _finish(workspace, summary)
