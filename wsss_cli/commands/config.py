"""`wsss config show`: the effective configuration as commented YAML."""

from __future__ import annotations

import argparse
from pathlib import Path


class Config:
    NAME = "config"
    HELP = "show the effective configuration (defaults, or a file's values over them)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        show = actions.add_parser(
            "show",
            help="print it as YAML, every section and field described in a comment",
            description="Print the effective configuration as YAML with comments; the output "
            "is a valid config file.",
        )
        show.add_argument("--config", help="YAML config file (any subset of sections)")
        show.add_argument(
            "--workspace", help="show the config this workspace's last run saved (config.yaml)"
        )

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from wsss_core.config import load_config
        from wsss_core.config_yaml import commented_yaml
        from wsss_core.store.workspace import Workspace
        from wsss_core.store.workspace_config import describe_config_source, load_workspace_config

        if args.workspace:
            workspace = Workspace(Path(args.workspace))
            config = load_workspace_config(workspace, args.config)
            source = describe_config_source(workspace, args.config)
        else:
            config = load_config(args.config)
            source = f"{args.config} over the defaults" if args.config else "the defaults"
        print(f"# wsss configuration: {source}")
        print(commented_yaml(config), end="")
        return 0
