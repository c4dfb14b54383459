"""Tasks: ingest a source (or the demo dataset) into the workspace manifest.

The stage (``wsss_core/stages/ingest_stage.py``) does all the work, reviewers'
label fixes included; these tasks add retries and log its summary.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import DemoConfig, ReviewConfig
from wsss_core.data.sources import IngestOptions, IngestSummary
from wsss_core.stages.ingest_stage import ingest, reingest
from wsss_core.store.workspace import Workspace


def _logged(summary: IngestSummary) -> IngestSummary:
    logger = get_run_logger()
    for line in summary.lines():
        logger.info(line)
    return summary


@task(name="ingest-demo", retries=1, **TASK_DEFAULTS)
def ingest_demo(workspace: Workspace, demo: DemoConfig) -> IngestSummary:
    """Generate the demo dataset under ``<workspace>/demo-source`` and ingest it."""
    return _logged(ingest("demo", workspace.root / "demo-source", workspace, demo=demo))


@task(name="reingest", retries=1, **TASK_DEFAULTS)
def reingest_source(workspace: Workspace, demo: DemoConfig, review: ReviewConfig) -> IngestSummary:
    """Read the workspace's recorded source again: picks up images added since the last run."""
    return _logged(reingest(workspace, demo=demo, review=review))


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
    return _logged(ingest(kind, path, workspace, options, demo=demo, review=review))
