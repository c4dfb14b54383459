"""The evaluate flow: mIoU per stage against the workspace's ground truth, nothing else.

No ``from __future__ import annotations`` here: Prefect reads the flow's
parameter annotations at run time to validate and to build deployment schemas.
"""

from pathlib import Path

from prefect import flow

from tasks.evaluate import evaluate as evaluate_task
from wsss_core.config import PipelineConfig
from wsss_core.stages.evaluate_stage import Evaluation
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import flow_config


@flow(name="evaluate", persist_result=False)
def evaluate(
    workspace: str, config_file: str | None = None, config: PipelineConfig | None = None
) -> Evaluation | None:
    """Score the cam, seeds, grown and crf maps; None when no image has ground truth.

    Only shards whose maps are all up to date are scored (see ``wsss status``).

    Args:
        workspace: the workspace directory (must hold a manifest and a classifier).
        config_file: YAML with any subset of the config sections, layered over
            the workspace's saved config (``config.yaml``); neither: the saved
            config, else the defaults.
        config: the validated config instead of ``config_file`` (the CLI passes it).
    """
    ws = Workspace(Path(workspace))
    ws.require_manifest()
    config = flow_config(ws, config_file, config)
    with workspace_lock(ws, "evaluation"):
        return evaluate_task(ws, config)
