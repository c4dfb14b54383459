"""Calling a flow from the command line: checked options in, (final state, result) out."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from flows.runners import RunnerOptions


ModelT = TypeVar("ModelT", bound=BaseModel)

# Runner fields whose flag is not --<field-name>.
RUNNER_FLAGS = {"kind": "--runner", "address": "--dask-address"}


class UsageError(Exception):
    """Options that parse but do not fit together (exit code 2)."""


def checked_options(
    model: type[ModelT], values: Mapping[str, Any], flags: Mapping[str, str] | None = None
) -> ModelT:
    """``model`` built from command-line values; a bad value is a UsageError naming its flag.

    ``flags`` maps the fields whose flag is not ``--<field-name>``. Called before
    any flow starts, so a bad value costs no work and exits 2, not 1.
    """
    try:
        return model.model_validate(dict(values))
    except ValidationError as error:
        raise UsageError(_describe_flags(error, flags or {})) from None


def _describe_flags(error: ValidationError, flags: Mapping[str, str]) -> str:
    """One line, ``--flag: message; ...`` (a check across fields: its message alone)."""
    parts = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["loc"]:
            field = str(item["loc"][0])
            flag = flags.get(field, "--" + field.replace("_", "-"))
            message = f"{flag}: {message}"
        parts.append(message)
    return "; ".join(parts)


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the per-shard tasks run")
    group.add_argument(
        "--runner",
        choices=("threads", "dask"),
        default=None,
        help="threads (default, one process) or dask (worker processes or machines)",
    )
    group.add_argument(
        "--workers", type=int, help="threads: pool size; dask: LocalCluster worker processes"
    )
    group.add_argument(
        "--dask-address", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (implies dask)"
    )


def runner_options(args: argparse.Namespace) -> RunnerOptions | None:
    """The parsed runner options, or None for Prefect's default thread pool."""
    from flows.runners import RunnerOptions

    if args.runner is None and args.workers is None and args.dask_address is None:
        return None
    kind = args.runner or ("dask" if args.dask_address else "threads")
    values = {"kind": kind, "workers": args.workers, "address": args.dask_address}
    options = checked_options(RunnerOptions, values, RUNNER_FLAGS)
    if options.address:
        from prefect.settings import PREFECT_API_URL

        # A temporary server would listen on 127.0.0.1, out of the workers' reach.
        if not PREFECT_API_URL.value():
            raise UsageError(
                "--dask-address needs PREFECT_API_URL set to a Prefect server the Dask "
                "workers reach too (see README, 'Scaling out with Dask')"
            )
    return options


def uses_dask(runner: RunnerOptions | None) -> bool:
    return runner is not None and runner.kind == "dask"


def call_flow(flow_function, dask: bool = False, **parameters: Any) -> tuple[Any, Any]:
    """Run a flow; returns its final state and its result (also when it ended Failed).

    ``dask``: the flow runs tasks on Dask workers, which need a Prefect API
    server they can reach (started here when none is configured). A flow that
    failed with an exception re-raises it, so the CLI shows one line; a flow
    that failed with a result (some shards failed) returns both, for the
    command to print what was done before reporting the failure.
    """
    from flows.runners import prefect_api_for_workers

    with prefect_api_for_workers() if dask else nullcontext():
        state = flow_function(**parameters, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return state, result
