"""Shard tasks: how many run at once, and which failures are retried."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PIL import UnidentifiedImageError
from prefect.task_runners import TaskRunner

from flows.runners import RunnerOptions, default_thread_workers, make_task_runner
from wsss_core.config import PipelineConfig
from wsss_core.stages.common import ShardOutcome
from wsss_core.store.workspace import Workspace

SHARDS = 12


class PeakCounter:
    """How many calls were inside ``track`` at once, at most."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._inside = 0
        self.peak = 0

    def track(self, seconds: float) -> None:
        with self._guard:
            self._inside += 1
            self.peak = max(self.peak, self._inside)
        time.sleep(seconds)
        with self._guard:
            self._inside -= 1


def _peak_shards_at_once(runner: TaskRunner) -> int:
    from prefect import flow, task

    counter = PeakCounter()
    shard = task(lambda index: counter.track(0.3), name="slow-shard", persist_result=False)

    @flow(task_runner=runner, persist_result=False)
    def stage() -> None:
        shard.map(range(SHARDS)).wait()

    stage()
    return counter.peak


def _label_flow_runner() -> TaskRunner:
    from flows.label import label

    return label.task_runner.duplicate()


@pytest.mark.parametrize(
    ("make_runner", "expected"),
    [
        (_label_flow_runner, default_thread_workers()),  # `wsss label` / `wsss run`
        (lambda: make_task_runner(RunnerOptions()), default_thread_workers()),
        (lambda: make_task_runner(RunnerOptions(kind="threads", workers=3)), 3),
    ],
    ids=["label-flow", "threads-default", "threads-3"],
)
def test_the_thread_pool_bounds_the_shards_at_once(prefect_harness, make_runner, expected):
    assert expected < SHARDS
    assert _peak_shards_at_once(make_runner()) == expected


class FlakyStage:
    """A stand-in ``run_<stage>_shard`` that fails with ``error`` on its first call."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def __call__(self, workspace, config, shard_index, progress, model_hash) -> ShardOutcome:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return ShardOutcome("crf", shard_index, 1, True)


@pytest.mark.parametrize(
    ("error", "calls", "completed"),
    [
        (OSError("stale NFS file handle"), 2, True),  # an I/O hiccup: retried, passes
        (UnidentifiedImageError("cannot identify image file x.jpg"), 1, False),  # bad data
        (ValueError("labels out of range"), 1, False),  # bad data or a bug: not retried
    ],
)
def test_only_io_errors_are_retried(prefect_harness, error, calls, completed):
    from prefect import flow

    from tasks._runtime import shard_task

    stage = FlakyStage(error)
    shard = shard_task("flaky-shard", stage).with_options(retry_delay_seconds=0)

    @flow(persist_result=False)
    def one_shard() -> bool:
        state = shard(Workspace(Path("unused")), PipelineConfig(), 0, "model", return_state=True)
        return state.is_completed()  # not the state itself: that would become the flow's

    assert one_shard() is completed
    assert stage.calls == calls
