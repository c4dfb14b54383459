"""Shared task settings, and the one shape every per-shard map-stage task has."""

from __future__ import annotations

import sys
from collections.abc import Callable

from PIL import UnidentifiedImageError
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from wsss_core.config import PipelineConfig
from wsss_core.stages.common import ShardOutcome
from wsss_core.store.workspace import Workspace

# Stage outputs carry their lineage in the Parquet metadata and skip themselves
# when it is unchanged, which keys on content, not on argument strings.
TASK_DEFAULTS = {"cache_policy": NO_CACHE, "persist_result": False}

# wsss_core.stages.<stage>_stage.run_<stage>_shard(workspace, config, shard, progress, model_hash)
ShardRunner = Callable[[Workspace, PipelineConfig, int, bool, str], ShardOutcome]


def shard_task(name: str, run_shard: ShardRunner) -> Task:
    """A Prefect task running one stage on one shard, mapped over shards by the label flow.

    ``model_hash`` is the classifier checkpoint's hash, taken once per run by
    the flow; it is part of every output's lineage. One retry, a few seconds
    later, rides out a transient I/O error (a shared filesystem's hiccup).
    """

    def run(
        workspace: Workspace, config: PipelineConfig, shard_index: int, model_hash: str
    ) -> ShardOutcome:
        outcome = run_shard(workspace, config, shard_index, _progress_bars_wanted(), model_hash)
        _log(outcome)
        return outcome

    run.__name__ = run.__qualname__ = name.replace("-", "_")
    return task(
        name=name,
        retries=1,
        retry_delay_seconds=5,
        retry_condition_fn=failed_on_io,
        **TASK_DEFAULTS,
    )(run)


def failed_on_io(_task: Task, _run: TaskRun, state: State) -> bool:
    """Retry a shard only when reading or writing failed (an I/O hiccup may pass).

    Errors in the data or the code would fail the same way again: retrying them
    only redoes the shard's work. An image Pillow cannot identify is such a
    data error, although Pillow makes it an ``OSError``.
    """
    error = state.data
    return isinstance(error, OSError) and not isinstance(error, UnidentifiedImageError)


def _progress_bars_wanted() -> bool:
    """Progress bars for people at a terminal; plain logs for workers and CI."""
    return sys.stderr.isatty()


def _log(outcome: ShardOutcome) -> None:
    state = f"computed in {outcome.seconds:.1f}s" if outcome.computed else "up to date, skipped"
    get_run_logger().info(
        f"{outcome.stage} shard {outcome.shard_index}: {outcome.images} images, {state}"
    )
