"""`wsss status`: per stage, the images that are done and those the next run computes."""

from __future__ import annotations

import argparse
from pathlib import Path

from wsss_cli.config_options import add_config_arguments, command_config


class Status:
    NAME = "status"
    HELP = "show per stage how many images are done and how many the next run computes"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workspace", required=True, help="workspace directory")
        add_config_arguments(parser)
        parser.add_argument(
            "--shards", action="store_true", help="also list each stage's pending shards"
        )

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        # The library only: no Prefect import, so the answer comes in about a second.
        from wsss_core.stages.status import workspace_status
        from wsss_core.store.workspace import Workspace

        workspace = Workspace(Path(args.workspace))
        workspace.require_manifest()
        config = command_config(args).config
        print("\n".join(workspace_status(workspace, config).lines(shards=args.shards)))
        return 0
