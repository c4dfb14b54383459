"""The workspace remembers the configuration of its last run.

A run saves the config it used as ``<workspace>/config.yaml`` (commented YAML,
itself a valid config file). Every later command that is not given
``--config`` reads it, so ``wsss status``, ``eval``, ``export`` and a plain
``wsss run`` agree with the run that made the maps, instead of comparing them
with the built-in defaults.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from wsss_core.config import PipelineConfig, load_config
from wsss_core.config_yaml import commented_yaml
from wsss_core.store.atomic import write_text_atomic
from wsss_core.store.workspace import Workspace


def load_workspace_config(workspace: Workspace, config_file: str | Path | None) -> PipelineConfig:
    """``config_file`` when given, else the workspace's saved config, else the defaults."""
    if config_file:
        return load_config(config_file)
    saved = workspace.config_path
    return load_config(saved) if saved.is_file() else PipelineConfig()


def describe_config_source(workspace: Workspace, config_file: str | Path | None) -> str:
    """Where :func:`load_workspace_config` takes the config from, for messages."""
    if config_file:
        return f"{config_file} over the defaults"
    if workspace.config_path.is_file():
        return f"{workspace.config_path} (saved by the workspace's last run)"
    return "the defaults"


def save_workspace_config(workspace: Workspace, config: PipelineConfig, purpose: str) -> None:
    """Record the config a run uses (call while holding the workspace lock)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    header = (
        f"# The configuration of this workspace's last {purpose} ({stamp}).\n"
        "# wsss commands without --config use it; edit it, or pass --config, to change it.\n"
    )
    text = header + commented_yaml(config)
    write_text_atomic(workspace.config_path, text)
