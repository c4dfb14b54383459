"""`wsss tune`: settings from the workspace's own true masks, with an honest held-out figure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsss_cli.flow_calls import UsageError

DEFAULT_BUDGET_MINUTES = 15.0


class Tune:
    NAME = "tune"
    HELP = "choose settings on the workspace's true masks and report them on held-out ones"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workspace", required=True, help="workspace directory")
        parser.add_argument(
            "--budget",
            type=float,
            default=DEFAULT_BUDGET_MINUTES,
            metavar="MINUTES",
            help=f"time for the search and the held-out check (default {DEFAULT_BUDGET_MINUTES:g})",
        )
        parser.add_argument(
            "--out",
            metavar="FILE",
            help="the tuned keys as a config file for `wsss run --config` "
            "(default: WS/tune/tuned.yaml)",
        )
        parser.add_argument(
            "--apply",
            action="store_true",
            help="write the tuned keys into WS/config.yaml, so later runs and the "
            "scheduled deployments use them",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="with --apply: apply even when the tuned settings lost on the held-out images",
        )
        parser.add_argument(
            "--seed", type=int, default=0, help="seed of the tuning / held-out split"
        )

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from wsss_core.report.tuning import tune_lines
        from wsss_core.stages.tune import TUNE_DIR, tune_workspace
        from wsss_core.stages.tune_output import (
            apply_to_workspace,
            held_out_objection,
            write_tuned_file,
        )
        from wsss_core.store.workspace import Workspace
        from wsss_core.store.workspace_config import load_workspace_config
        from wsss_core.tuning.split import TooFewTrueMasks

        if not args.budget > 0:
            raise UsageError(f"--budget: must be a positive number of minutes, got {args.budget}")
        workspace = Workspace(Path(args.workspace))
        workspace.require_manifest()
        config = load_workspace_config(workspace, None)
        try:
            result = tune_workspace(
                workspace,
                config,
                args.budget * 60,
                seed=args.seed,
                show_progress=sys.stderr.isatty(),
                log=print,
            )
        except TooFewTrueMasks as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print()
        print("\n".join(tune_lines(result)))
        out = Path(args.out) if args.out else workspace.root / TUNE_DIR / "tuned.yaml"
        print(f"\ntuned settings: {write_tuned_file(result, out)}")
        objection = held_out_objection(result)
        if objection:
            print(f"warning: {objection}", file=sys.stderr)
        if args.apply and objection and not args.force:
            print(f"not applied (--force applies them anyway): {objection}", file=sys.stderr)
        elif args.apply:
            apply_to_workspace(workspace, result)
            print(f"applied to {workspace.config_path}: the next `wsss run` uses them")
        elif result.search.changes and not objection:
            print(f"use them: wsss run --workspace {workspace.root} --config {out}")
        return 0
