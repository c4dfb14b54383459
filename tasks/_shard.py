"""The one shape every per-shard map-stage task has (cam, seeds, grow, crf).

Apart from ``tasks/_runtime.py`` because it imports the stages, and with them
torch: the ingest and review tasks should not pay for that at import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from PIL import UnidentifiedImageError
from prefect import Task, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import PipelineConfig
from wsss_core.stages.common import ShardOutcome
from wsss_core.store.workspace import Workspace

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


# OSErrors that say something about the data, not about a passing I/O hiccup.
DATA_ERRORS = (
    UnidentifiedImageError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def failed_on_io(_task: Task, _run: TaskRun, state: State) -> bool:
    """Retry a shard only when reading or writing failed (an I/O hiccup may pass).

    Errors in the data or the code would fail the same way again: retrying them
    only redoes the shard's work. Some data errors are ``OSError`` too: an image
    Pillow cannot identify, a file gone from the source or not readable.
    """
    error = state.data
    return isinstance(error, OSError) and not isinstance(error, DATA_ERRORS)


def _progress_bars_wanted() -> bool:
    """Progress bars for people at a terminal; plain logs for workers and CI."""
    return sys.stderr.isatty()


def _log(outcome: ShardOutcome) -> None:
    state = f"computed in {outcome.seconds:.1f}s" if outcome.computed else "up to date, skipped"
    get_run_logger().info(
        f"{outcome.stage} shard {outcome.shard_index}: {outcome.images} images, {state}"
    )
