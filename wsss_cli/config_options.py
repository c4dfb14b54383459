"""``--config`` and ``--from-defaults``: each command reads its config once, here.

The layers, lowest first: the built-in defaults; the workspace's saved
``config.yaml`` (left out with ``--from-defaults``); the ``--config`` file (its
keys win, the rest is kept); the command's own setting flags (``wsss train
--epochs``, ``wsss ingest --database-dir``, ``wsss demo --dataset``, ``wsss review
--port``). The result, validated once, is what the command passes to its flow.
A bad value is a ``ConfigError`` (exit 2) naming the file and the key, before
any work starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsss_core.config_layers import LayeredConfig

CONFIG_HELP = (
    "YAML config file (any subset of sections), layered over the workspace's config.yaml "
    "(saved by its last run): the file's keys win, the rest is kept"
)
FROM_DEFAULTS_HELP = (
    "start from the built-in defaults instead of the workspace's saved config.yaml "
    "(with --config: the file over the defaults alone)"
)


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str = CONFIG_HELP) -> None:
    parser.add_argument("--config", metavar="FILE", help=config_help)
    parser.add_argument("--from-defaults", action="store_true", help=FROM_DEFAULTS_HELP)


def config_path(args: argparse.Namespace) -> str | None:
    """``--config`` made absolute (flows may run in another directory)."""
    return str(Path(args.config).expanduser().resolve()) if args.config else None


def command_config(
    args: argparse.Namespace, flags: Mapping[str, Any] | None = None
) -> LayeredConfig:
    """The command's config from its ``--workspace``, ``--config``, ``--from-defaults`` and
    ``flags`` (settings given as options, a partial mapping of sections)."""
    from wsss_core.store.workspace import Workspace
    from wsss_core.store.workspace_config import layered_workspace_config

    workspace = Workspace(Path(args.workspace))
    return layered_workspace_config(workspace, config_path(args), args.from_defaults, flags)
