"""The training flow: train (or resume, or reuse) the workspace's classifier, nothing else.

No ``from __future__ import annotations`` here: Prefect reads the flow's
parameter annotations at run time to validate and to build deployment schemas.
"""

from pathlib import Path
from typing import Any

from prefect import flow

from tasks.train import train as train_task
from wsss_core.config import PipelineConfig
from wsss_core.config_layers import override
from wsss_core.model.reuse import TrainOutcome
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import flow_config, save_workspace_config


def training_config(
    config: PipelineConfig,
    train_overrides: dict[str, Any] | None = None,
    device: str | None = None,
) -> PipelineConfig:
    """``config`` with overrides of the ``train`` section and the device, validated as a
    whole, so a bad override is the same clear error as a bad file."""
    values: dict[str, Any] = {"train": train_overrides} if train_overrides else {}
    if device is not None:
        values["device"] = device
    return override(config, values, "training options") if values else config


@flow(name="train", persist_result=False)
def train(
    workspace: str,
    config_file: str | None = None,
    train_overrides: dict[str, Any] | None = None,
    device: str | None = None,
    resume: bool | None = None,
    force: bool = False,
    config: PipelineConfig | None = None,
) -> TrainOutcome:
    """Train the multi-label CAM classifier of an ingested workspace.

    Args:
        workspace: the workspace directory (must hold a manifest).
        config_file: YAML with any subset of the config sections, layered over the
            workspace's saved config (``config.yaml``); neither: the saved config,
            else the defaults.
        train_overrides: fields of the ``train`` section that replace the file's.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (default: the config's).
        resume: None continues a matching interrupted run; True requires one
            (``models/last.pt``); False always starts over unless up to date.
        force: train from scratch even when the model is up to date.
        config: the validated config instead of ``config_file`` (the CLI passes
            it, its flags already in).
    """
    ws = Workspace(Path(workspace))
    ws.require_manifest()
    config = training_config(flow_config(ws, config_file, config), train_overrides, device)
    with workspace_lock(ws, "training"):
        # Saved with the overrides: a later `wsss run` then reuses this model.
        save_workspace_config(ws, config, "training")
        return train_task(ws, config, resume=resume, force=force)
