"""The ``wsss`` command line: thin argument parsing over the Prefect flows.

Exit codes: 0 ok, 1 failure (one-line error unless ``--debug``), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_DEMO_WORKSPACE = "demo-workspace"


def _quiet_offline_defaults(debug: bool) -> None:
    """Prefect and FiftyOne settings for an offline, predictable run (user values win).

    Without ``--debug`` Prefect's own logs stay quiet: failures reach the user as
    our one-line error, progress as progress bars.
    """
    for key, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_LEVEL": "INFO" if debug else "CRITICAL",
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",
    }.items():
        os.environ.setdefault(key, value)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsss",
        description="Pseudo-masks from image-level labels: CAM -> seeds -> DSRG -> dense CRF.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="generate the demo dataset and run the pipeline")
    demo.add_argument("--workspace", default=DEFAULT_DEMO_WORKSPACE, help="workspace directory")
    demo.add_argument("--config", help="YAML config file (any subset of sections)")
    demo.add_argument("--no-publish", action="store_true", help="skip the FiftyOne publish")

    run = commands.add_parser("run", help="run the pipeline on an ingested workspace")
    run.add_argument("--workspace", required=True, help="workspace directory")
    run.add_argument("--config", help="YAML config file (any subset of sections)")
    run.add_argument("--no-publish", action="store_true", help="skip the FiftyOne publish")

    review = commands.add_parser("review", help="open the FiftyOne App on a workspace")
    review.add_argument("--workspace", required=True, help="workspace directory")
    review.add_argument("--config", help="YAML config file (review section)")
    review.add_argument("--port", type=int, help="App port (default from config: 5151)")
    review.add_argument("--address", default="127.0.0.1", help="bind address")
    return parser


def _print_result(result) -> None:
    print(
        f"classifier: validation mAP {result.val_map:.4f}"
        f" ({'trained' if result.trained else 'reused'})"
    )
    if result.evaluation is not None:
        print(f"\nmIoU per stage over {result.evaluation.images} images with ground truth:")
        print(result.evaluation.table())
    if result.dataset_name:
        print(f"\nFiftyOne dataset: {result.dataset_name}")
        print(f"open the App:  wsss review --workspace {result.workspace}")


def _run_pipeline(args: argparse.Namespace, demo: bool) -> int:
    from flows.pseudo_label import load_config, pseudo_label
    from wsss_core.store.workspace import Workspace

    config_file = str(Path(args.config).resolve()) if args.config else None
    load_config(config_file)  # validate before starting anything
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


def _review(args: argparse.Namespace) -> int:
    from flows.pseudo_label import load_config
    from wsss_core.review.fiftyone_adapter import launch_app
    from wsss_core.store.workspace import Workspace

    config = load_config(args.config).review
    if args.port is not None:
        config = config.model_copy(update={"port": args.port})
    launch_app(Workspace(Path(args.workspace)), config, address=args.address)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    _quiet_offline_defaults(args.debug)
    handlers = {
        "demo": lambda: _run_pipeline(args, demo=True),
        "run": lambda: _run_pipeline(args, demo=False),
        "review": lambda: _review(args),
    }
    try:
        return handlers[args.command]()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except Exception as error:  # one line for users; --debug for the traceback
        if args.debug:
            raise
        print(f"wsss {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
