"""The workspace remembers the configuration of its last run.

A run saves the config it used as ``<workspace>/config.yaml`` (commented YAML,
itself a valid config file). Every later command reads it, so ``wsss status``,
``eval``, ``export`` and a plain ``wsss run`` agree with the run that made the
maps, instead of comparing them with the built-in defaults. A config file
given to a command is layered over it (the file's keys win, the rest is
kept); ``from_defaults`` layers the file over the defaults alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wsss_core.config import ConfigError, PipelineConfig
from wsss_core.config_layers import ConfigLayer, LayeredConfig, layered_config
from wsss_core.config_yaml import commented_yaml
from wsss_core.store.atomic import write_text_atomic
from wsss_core.store.workspace import Workspace

FLAGS_LABEL = "command-line flags"


def layered_workspace_config(
    workspace: Workspace,
    config_file: str | Path | None = None,
    from_defaults: bool = False,
    flags: Mapping[str, Any] | None = None,
) -> LayeredConfig:
    """The defaults, then the saved config (unless ``from_defaults``), ``config_file``, ``flags``.

    ``flags``: settings given as command-line options, a partial mapping of sections.
    """
    layers = []
    if not from_defaults and workspace.config_path.is_file():
        layers.append(ConfigLayer.from_file("saved", workspace.config_path))
    if config_file:
        layers.append(ConfigLayer.from_file("file", config_file))
    if flags:
        layers.append(ConfigLayer("flag", FLAGS_LABEL, flags))
    return layered_config(layers)


def load_workspace_config(
    workspace: Workspace, config_file: str | Path | None, from_defaults: bool = False
) -> PipelineConfig:
    """``config_file`` over the workspace's saved config (``from_defaults``: over the defaults)."""
    return layered_workspace_config(workspace, config_file, from_defaults).config


def flow_config(
    workspace: Workspace, config_file: str | None, config: PipelineConfig | None
) -> PipelineConfig:
    """What a flow runs with: the validated ``config`` its caller passes (the CLI, a
    parent flow), else ``config_file`` over the saved config (a deployment passes a path)."""
    if config is None:
        return load_workspace_config(workspace, config_file)
    if config_file:
        raise ConfigError(f"{config_file}: pass a config or a config file to the flow, not both")
    return config


def save_workspace_config(
    workspace: Workspace,
    config: PipelineConfig,
    purpose: str,
    notes: Sequence[str] = (),
    sources: Mapping[str, str] | None = None,
) -> None:
    """Record the config a run uses (call while holding the workspace lock).

    ``notes``: more comment lines for the header; ``sources``: dotted key ->
    where its value came from, shown in its comment (see ``commented_yaml``).
    """
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    header = (
        f"# The configuration of this workspace's last {purpose} ({stamp}).\n"
        "# wsss commands without --config use it; edit it, or pass --config, to change it.\n"
    )
    header += "".join(f"# {note}\n" for note in notes)
    text = header + commented_yaml(config, sources)
    write_text_atomic(workspace.config_path, text)
