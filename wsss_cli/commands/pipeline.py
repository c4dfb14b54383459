"""`wsss demo` and `wsss run`: the whole pipeline as one Prefect flow run."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DEMO_WORKSPACE = "demo-workspace"


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (any subset of sections)")
    parser.add_argument("--no-publish", action="store_true", help="skip the FiftyOne publish")


def _print_result(result) -> None:
    verb = "trained" if result.trained else "reused"
    print(f"classifier: validation mAP {result.val_map:.4f} ({verb})")
    if result.evaluation is not None:
        print(f"\nmIoU per stage over {result.evaluation.images} images with ground truth:")
        print(result.evaluation.table())
    print(f"\nrun report: {result.report_path}")
    if result.dataset_name:
        print(f"\nFiftyOne dataset: {result.dataset_name}")
        print(f"open the App:  wsss review --workspace {result.workspace}")


def _run_pipeline(args: argparse.Namespace, demo: bool) -> int:
    from flows.pseudo_label import load_config, pseudo_label
    from wsss_core.store.workspace import Workspace

    config_file = str(Path(args.config).resolve()) if args.config else None
    config = load_config(config_file)  # validate before starting anything
    if not args.no_publish and config.review.database_uri:
        from wsss_core.review.fiftyone_adapter import check_database

        check_database(config.review.database_uri)  # fail in seconds, before any work
    if not demo:
        Workspace(Path(args.workspace)).require_manifest()
    result = pseudo_label(
        workspace=str(Path(args.workspace).resolve()),
        config_file=config_file,
        demo=demo,
        publish=not args.no_publish,
    )
    _print_result(result)
    return 0


class Demo:
    NAME = "demo"
    HELP = "generate the demo dataset and run the whole pipeline on it"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--workspace", default=DEFAULT_DEMO_WORKSPACE, help="workspace directory"
        )
        _add_common(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return _run_pipeline(args, demo=True)


class Run:
    NAME = "run"
    HELP = "run the whole pipeline on an ingested workspace"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workspace", required=True, help="workspace directory")
        _add_common(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return _run_pipeline(args, demo=False)
