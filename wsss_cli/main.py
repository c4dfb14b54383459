"""The ``wsss`` command line: thin argument parsing over the Prefect flows.

Exit codes: 0 ok, 1 failure (one-line error unless ``--debug``), 2 usage error
(a bad option, or a config setting out of its bounds: caught before any work).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from wsss_cli.commands import COMMANDS
from wsss_cli.flow_calls import UsageError
from wsss_core.config import ConfigError


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
        "DASK_LOGGING__DISTRIBUTED": "info" if debug else "error",
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",
    }.items():
        os.environ.setdefault(key, value)


def _one_line(error: BaseException) -> str:
    """The error's message on one line (a YAML parse error, for one, spans several)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsss",
        description="Pseudo-masks from image-level labels: CAM -> seeds -> DSRG -> dense CRF.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_offline_defaults(args.debug)
    try:
        return args.handler(args)
    except (UsageError, ConfigError) as error:
        print(f"wsss {args.command}: usage error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except Exception as error:  # one line for users; --debug for the traceback
        if args.debug:
            raise
        print(f"wsss {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
