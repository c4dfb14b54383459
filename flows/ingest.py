"""The ingest flow: one dataset source into a workspace's manifest and quarantine.

No ``from __future__ import annotations`` here: Prefect reads the flow's
parameter annotations at run time to validate and to build deployment schemas.
"""

from pathlib import Path

from prefect import flow

from tasks.ingest import ingest_source
from wsss_core.config import PipelineConfig
from wsss_core.data.sources import IngestOptions, IngestSummary
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import flow_config


@flow(name="ingest", persist_result=False)
def ingest_data(
    source: str,
    path: str | None,
    workspace: str,
    options: IngestOptions | None = None,
    config_file: str | None = None,
    config: PipelineConfig | None = None,
) -> IngestSummary:
    """Ingest ``path`` as a ``source`` (voc, coco, folder, fiftyone, demo) into ``workspace``.

    Args:
        source: the source kind.
        path: the dataset (VOC root, COCO JSON or folder, data folder, FiftyOne
            dataset name, or where to write the demo data).
        workspace: the workspace directory; an existing manifest of the same
            source is updated incrementally.
        options: source options (split, classes, ...); defaults otherwise.
        config_file: YAML config, layered over the workspace's saved one; its
            ``demo`` and ``review`` sections are used.
        config: the validated config instead of ``config_file`` (the CLI passes it).
    """
    ws = Workspace(Path(workspace))
    config = flow_config(ws, config_file, config)
    with workspace_lock(ws, f"{source} ingest"):
        return ingest_source(
            ws, source, path, options or IngestOptions(), demo=config.demo, review=config.review
        )
