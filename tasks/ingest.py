"""Task: build the demo dataset and ingest it into the workspace manifest."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import DemoConfig
from wsss_core.data.demo import generate_demo_dataset
from wsss_core.data.folder_source import IngestSummary, ingest_folder
from wsss_core.store.workspace import Workspace


@task(name="ingest-demo", retries=1, **TASK_DEFAULTS)
def ingest_demo(workspace: Workspace, demo: DemoConfig) -> IngestSummary:
    source = workspace.root / "demo-source"
    dataset = generate_demo_dataset(
        source, num_images=demo.num_images, image_size=demo.image_size, seed=demo.seed
    )
    summary = ingest_folder(
        dataset.images_dir,
        dataset.labels_csv,
        workspace,
        classes_file=dataset.classes_txt,
        masks_dir=dataset.masks_dir,
        source_kind="demo",
    )
    for line in summary.lines():
        get_run_logger().info(line)
    return summary


@task(name="ingest-folder", retries=1, **TASK_DEFAULTS)
def ingest_folder_task(
    workspace: Workspace,
    images_dir: Path,
    labels_csv: Path,
    classes_file: Path | None = None,
    masks_dir: Path | None = None,
) -> IngestSummary:
    summary = ingest_folder(images_dir, labels_csv, workspace, classes_file, masks_dir)
    for line in summary.lines():
        get_run_logger().info(line)
    return summary
