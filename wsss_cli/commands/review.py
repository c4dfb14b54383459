"""`wsss review`: the FiftyOne App on a workspace, or `wsss review sync` to record reviews."""

from __future__ import annotations

import argparse
from pathlib import Path

from wsss_cli.flow_calls import checked_options


class Review:
    NAME = "review"
    HELP = "open the FiftyOne App on a workspace, or `sync` reviewers' tags into it"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "action",
            nargs="?",
            choices=("app", "sync"),
            default="app",
            help="app (default): serve the App; sync: record tags and label corrections",
        )
        parser.add_argument("--workspace", required=True, help="workspace directory")
        parser.add_argument("--config", help="YAML config file (review section)")
        parser.add_argument("--port", type=int, help="App port (default from config: 5151)")
        parser.add_argument(
            "--address", default="127.0.0.1", help="bind address (0.0.0.0 exposes it to all)"
        )

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from wsss_core.config import ReviewConfig
        from wsss_core.store.workspace import Workspace
        from wsss_core.store.workspace_config import load_workspace_config

        config = load_workspace_config(Workspace(Path(args.workspace)), args.config).review
        if args.port is not None:  # validated, unlike model_copy(update=...): --port 0 exits 2
            config = checked_options(ReviewConfig, {**config.model_dump(), "port": args.port})
        if config.database_uri:
            from wsss_core.review.fiftyone_adapter import check_database

            check_database(config.database_uri)  # fail in seconds, before any work
        if args.action == "sync":
            return _sync(args)
        from wsss_core.review.fiftyone_adapter import launch_app

        launch_app(Workspace(Path(args.workspace)), config, address=args.address)
        return 0


def _sync(args: argparse.Namespace) -> int:
    from flows.review_sync import review_sync

    summary = review_sync(
        workspace=str(Path(args.workspace).resolve()),
        config_file=str(Path(args.config).resolve()) if args.config else None,
    )
    if summary is None:
        print("nothing published yet: run the pipeline first")
        return 0
    print(
        f"{summary.changed} review change(s) recorded: {summary.approved} approved, "
        f"{summary.rejected} rejected, {summary.needs_fix} needs-fix, "
        f"{summary.label_corrections} label correction(s)"
    )
    return 0
