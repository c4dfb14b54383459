"""Task: the run report, as workspace files and as a Prefect markdown artifact."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import PipelineConfig
from wsss_core.report.run_report import RunReport, RunSummary, write_run_report
from wsss_core.store.workspace import Workspace


@task(name="run-report", **TASK_DEFAULTS)
def report(workspace: Workspace, config: PipelineConfig, summary: RunSummary) -> RunReport:
    written = write_run_report(workspace, config, summary)
    create_markdown_artifact(
        key="run-report", markdown=written.markdown, description=f"run {summary.run_id}"
    )
    get_run_logger().info(f"report: {written.directory / 'report.md'}")
    return written
