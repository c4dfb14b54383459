"""`wsss review`: the FiftyOne App on a workspace, `sync` to record reviews, `fix` to edit masks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from wsss_cli.config_options import add_config_arguments, command_config
from wsss_cli.flow_calls import checked_options

if TYPE_CHECKING:
    from wsss_core.config import PipelineConfig


class Review:
    NAME = "review"
    HELP = (
        "open the FiftyOne App on a workspace, `sync` reviewers' tags into it, or `fix`: "
        "masks out to Label Studio and corrections back (--pull)"
    )

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "action",
            nargs="?",
            choices=("app", "sync", "fix"),
            default="app",
            help="app (default): serve the App; sync: record tags and label corrections; "
            "fix: send masks to Label Studio for editing (--pull brings corrections back)",
        )
        parser.add_argument("--workspace", required=True, help="workspace directory")
        add_config_arguments(
            parser,
            "YAML config (its review section), layered over the workspace's config.yaml: "
            "the file's keys win, the rest is kept",
        )
        parser.add_argument("--port", type=int, help="App port (default from config: 5151)")
        parser.add_argument(
            "--address", default="127.0.0.1", help="bind address (0.0.0.0 exposes it to all)"
        )
        fix = parser.add_argument_group("fix")
        fix.add_argument(
            "--view",
            default="needs-fix",
            help="fix: the samples to send: a saved view (needs-fix, review-queue, "
            "label-suspects, ...) or a file of image ids, one a line (default: needs-fix)",
        )
        what = fix.add_mutually_exclusive_group()
        what.add_argument("--pull", action="store_true", help="fix: bring corrections back")
        what.add_argument("--stop", action="store_true", help="fix: stop the started server")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from wsss_core.config import ReviewConfig
        from wsss_core.store.workspace import Workspace

        flags = None
        if args.port is not None:
            checked_options(ReviewConfig, {"port": args.port})  # --port 0: exit 2 naming --port
            flags = {"review": {"port": args.port}}
        config = command_config(args, flags).config
        if config.review.database_uri:
            from wsss_core.review.fiftyone_adapter import check_database

            check_database(config.review.database_uri)  # fail in seconds, before any work
        if args.action == "sync":
            return _sync(args, config)
        if args.action == "fix":
            from wsss_cli.commands.review_fix import fix

            return fix(args, config)
        from wsss_core.review.fiftyone_adapter import launch_app

        launch_app(Workspace(Path(args.workspace)), config.review, address=args.address)
        return 0


def _sync(args: argparse.Namespace, config: PipelineConfig) -> int:
    from flows.review_sync import review_sync

    summary = review_sync(workspace=str(Path(args.workspace).resolve()), config=config)
    if summary is None:
        print("nothing published yet: run the pipeline first")
        return 0
    print(
        f"{summary.changed} review change(s) recorded: {summary.approved} approved, "
        f"{summary.rejected} rejected, {summary.needs_fix} needs-fix, "
        f"{summary.label_corrections} label correction(s)"
    )
    return 0
