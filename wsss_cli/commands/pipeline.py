"""`wsss demo`, `wsss run`, `wsss label` and `wsss eval`: the pipeline, whole or in parts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from wsss_cli.config_options import add_config_arguments, command_config
from wsss_cli.flow_calls import add_runner_arguments, call_flow, runner_options, uses_dask

if TYPE_CHECKING:
    from wsss_core.config import PipelineConfig

DEFAULT_DEMO_WORKSPACE = "demo-workspace"
DEMO_DATASETS = ("digits", "scenes")


def _add_workspace(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    if default:
        parser.add_argument("--workspace", default=default, help="workspace directory")
    else:
        parser.add_argument("--workspace", required=True, help="workspace directory")
    add_config_arguments(parser)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-publish", action="store_true", help="skip the FiftyOne publish")
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="retrain when labelled training images changed since the classifier was trained "
        "(default: keep it, so new images only get maps)",
    )
    add_runner_arguments(parser)


def _print_stage_counts(result) -> None:
    computed = ", ".join(
        f"{stage} {shards} ({result.computed_images.get(stage, 0)} images)"
        for stage, shards in result.computed_shards.items()
    )
    print(f"shards recomputed: {computed}")


def _print_recovered(result) -> None:
    """One line on masks whose labelled class the crf stage restored."""
    from wsss_core.report.run_report import recovered_lines

    if result.recovered:
        print(*recovered_lines(result.recovered, limit=5))


def _print_failures(state, result) -> int:
    """One line per failed image, then per failed shard, on stderr; the exit code.

    Failed images alone leave the exit code 0: the rest of the run is done.
    """
    failed_images = result.failed_images
    for failure in failed_images:
        print(f"image failed: {failure}", file=sys.stderr)
    if failed_images:
        print(
            f"{len(failed_images)} image(s) failed and are skipped (listed in quarantine.parquet); "
            "a re-run retries one when its file or the settings change",
            file=sys.stderr,
        )
    if not state.is_failed():
        return 0
    for failure in result.failures:
        print(f"failed: {failure}", file=sys.stderr)
    print(f"error: {state.message}", file=sys.stderr)
    return 1


def _print_pipeline_result(result) -> None:
    verb = "trained" if result.trained else "reused"
    print(f"classifier: validation mAP {result.val_map:.4f} ({verb})")
    if result.model_behind_data:
        print(
            "  the labelled training images changed since it was trained: "
            "`wsss run --retrain` learns from them"
        )
    _print_stage_counts(result)
    _print_recovered(result)
    if result.evaluation is not None:
        print(f"\nmIoU per stage over {result.evaluation.images} images with ground truth:")
        print(result.evaluation.table())
    print(f"\nrun report: {result.report_path}")
    if result.dataset_name:
        print(f"\nFiftyOne dataset: {result.dataset_name}")
        print(f"open the App:  wsss review --workspace {result.workspace}")


def _pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The run's config (see config_options); `wsss demo --dataset` sets demo.kind on top."""
    dataset = getattr(args, "dataset", None)
    return command_config(args, {"demo": {"kind": dataset}} if dataset else None).config


def _run_pipeline(args: argparse.Namespace, demo: bool) -> int:
    from flows.pseudo_label import pseudo_label
    from wsss_core.store.workspace import Workspace

    runner = runner_options(args)
    config = _pipeline_config(args)
    if not args.no_publish and config.review.database_uri:
        from wsss_core.review.fiftyone_adapter import check_database

        check_database(config.review.database_uri)  # fail in seconds, before any work
    if not demo:
        Workspace(Path(args.workspace)).require_manifest()
    state, result = call_flow(
        pseudo_label,
        dask=uses_dask(runner),
        workspace=str(Path(args.workspace).resolve()),
        config=config,
        demo=demo,
        publish=not args.no_publish,
        refresh=getattr(args, "refresh", False),
        retrain=args.retrain,
        runner=runner,
    )
    _print_pipeline_result(result)
    return _print_failures(state, result)


class Demo:
    NAME = "demo"
    HELP = "generate the demo dataset and run the whole pipeline on it"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _add_workspace(parser, default=DEFAULT_DEMO_WORKSPACE)
        parser.add_argument(
            "--dataset",
            choices=DEMO_DATASETS,
            help="overrides demo.kind: digits (MNIST on gradients, the default) or scenes "
            "(textured shapes on photos)",
        )
        _add_run_options(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return _run_pipeline(args, demo=True)


class Run:
    NAME = "run"
    HELP = "run the whole pipeline on an ingested workspace"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _add_workspace(parser)
        parser.add_argument(
            "--refresh",
            action="store_true",
            help="read the workspace's source again first (picks up added images)",
        )
        _add_run_options(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return _run_pipeline(args, demo=False)


class Label:
    NAME = "label"
    HELP = "compute cam, seeds, grown, affinity and crf maps with the workspace's classifier"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _add_workspace(parser)
        add_runner_arguments(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from flows.label import label_with_runner
        from wsss_core.store.workspace import Workspace

        runner = runner_options(args)
        config = command_config(args).config
        Workspace(Path(args.workspace)).require_manifest()
        state, result = call_flow(
            label_with_runner(runner),
            dask=uses_dask(runner),
            workspace=str(Path(args.workspace).resolve()),
            config=config,
        )
        _print_stage_counts(result)
        _print_recovered(result)
        return _print_failures(state, result)


class Eval:
    NAME = "eval"
    HELP = "mIoU per stage against the ground truth (up-to-date shards only)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _add_workspace(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from flows.evaluate import evaluate
        from wsss_core.store.workspace import Workspace

        config = command_config(args).config
        Workspace(Path(args.workspace)).require_manifest()
        _, evaluation = call_flow(
            evaluate, workspace=str(Path(args.workspace).resolve()), config=config
        )
        if evaluation is None:
            print("no image of this workspace has ground truth: nothing to evaluate")
            return 0
        print(f"mIoU per stage over {evaluation.images} images with ground truth:")
        print(evaluation.table())
        if evaluation.pending_shards:
            print(
                f"\n{evaluation.pending_shards} shard(s) left out: their maps are missing or "
                "out of date; run `wsss label` (or `wsss run`) first"
            )
        return 0
