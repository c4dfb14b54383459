"""`wsss review`: the FiftyOne App on a workspace's dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


class Review:
    NAME = "review"
    HELP = "open the FiftyOne App on a workspace (127.0.0.1 by default)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workspace", required=True, help="workspace directory")
        parser.add_argument("--config", help="YAML config file (review section)")
        parser.add_argument("--port", type=int, help="App port (default from config: 5151)")
        parser.add_argument("--address", default="127.0.0.1", help="bind address")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from flows.pseudo_label import load_config
        from wsss_core.review.fiftyone_adapter import launch_app
        from wsss_core.store.workspace import Workspace

        config = load_config(args.config).review
        if args.port is not None:
            config = config.model_copy(update={"port": args.port})
        launch_app(Workspace(Path(args.workspace)), config, address=args.address)
        return 0
