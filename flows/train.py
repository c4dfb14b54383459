"""The training flow: train (or resume, or reuse) the workspace's classifier, nothing else.

No ``from __future__ import annotations`` here: Prefect reads the flow's
parameter annotations at run time to validate and to build deployment schemas.
"""

from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import ValidationError

from tasks.train import train as train_task
from wsss_core.config import ConfigError, PipelineConfig, describe_validation_error
from wsss_core.model.reuse import TrainOutcome
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import load_workspace_config, save_workspace_config


def training_config(
    ws: Workspace,
    config_file: str | None,
    train_overrides: dict[str, Any] | None = None,
    device: str | None = None,
) -> PipelineConfig:
    """The config file (else the workspace's saved one, else the defaults) with
    command-line overrides of the ``train`` section.

    Validated as a whole, so a bad override is the same clear error as a bad file.
    """
    config = load_workspace_config(ws, config_file)
    raw = config.model_dump()
    raw["train"] = {**raw["train"], **(train_overrides or {})}
    if device is not None:
        raw["device"] = device
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"invalid training option: {describe_validation_error(error)}") from None


@flow(name="train", persist_result=False)
def train(
    workspace: str,
    config_file: str | None = None,
    train_overrides: dict[str, Any] | None = None,
    device: str | None = None,
    resume: bool | None = None,
    force: bool = False,
) -> TrainOutcome:
    """Train the multi-label CAM classifier of an ingested workspace.

    Args:
        workspace: the workspace directory (must hold a manifest).
        config_file: YAML with any subset of the config sections; defaults otherwise.
        train_overrides: fields of the ``train`` section that replace the file's.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (default: the config's).
        resume: None continues a matching interrupted run; True requires one
            (``models/last.pt``); False always starts over unless up to date.
        force: train from scratch even when the model is up to date.
    """
    ws = Workspace(Path(workspace))
    ws.require_manifest()
    config = training_config(ws, config_file, train_overrides, device)
    with workspace_lock(ws, "training"):
        # Saved with the overrides: a later `wsss run` then reuses this model.
        save_workspace_config(ws, config, "training")
        return train_task(ws, config, resume=resume, force=force)
