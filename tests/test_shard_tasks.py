"""Shard tasks: how many run at once, and which failures are retried."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PIL import UnidentifiedImageError
from prefect.task_runners import TaskRunner

from flows.runners import (
    RunnerOptions,
    cgroup_cpu_limit,
    default_thread_workers,
    make_task_runner,
)
from wsss_core.config import PipelineConfig
from wsss_core.stages.common import ShardOutcome
from wsss_core.store.workspace import Workspace


class PeakCounter:
    """How many shards were inside ``track`` at once, at most.

    Each shard waits (up to 10 s) until ``expected`` shards are inside together,
    so a pool of that size always reaches it, whatever the machine's load; then
    it stays a moment longer, so a pool that admits more shows more.
    """

    def __init__(self, expected: int) -> None:
        self._guard = threading.Lock()
        self._inside = 0
        self._expected = expected
        self._full = threading.Event()
        self.peak = 0

    def track(self) -> None:
        with self._guard:
            self._inside += 1
            self.peak = max(self.peak, self._inside)
            if self._inside >= self._expected:
                self._full.set()
        self._full.wait(10)
        time.sleep(0.2)
        with self._guard:
            self._inside -= 1


def _peak_shards_at_once(runner: TaskRunner, expected: int) -> int:
    from prefect import flow, task

    counter = PeakCounter(expected)
    shard = task(lambda index: counter.track(), name="slow-shard", persist_result=False)

    @flow(task_runner=runner, persist_result=False)
    def stage() -> None:
        shard.map(range(2 * expected + 2)).wait()  # more shards than the pool's size

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
    assert _peak_shards_at_once(make_runner(), expected) == expected


@pytest.mark.parametrize(
    ("content", "limit"),
    [("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000\n", 2), ("5000 100000", 1)],
)
def test_a_container_cpu_quota_bounds_the_default_pool(tmp_path: Path, content: str, limit):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content)
    assert cgroup_cpu_limit(cpu_max) == limit
    assert cgroup_cpu_limit(tmp_path / "absent") is None  # no cgroup v2: no quota


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
        (FileNotFoundError("images/x.jpg"), 1, False),  # gone from the source
        (ValueError("labels out of range"), 1, False),  # bad data or a bug: not retried
    ],
)
def test_only_io_errors_are_retried(prefect_harness, error, calls, completed):
    from prefect import flow

    from tasks._shard import shard_task

    stage = FlakyStage(error)
    shard = shard_task("flaky-shard", stage).with_options(retry_delay_seconds=0)

    @flow(persist_result=False)
    def one_shard() -> bool:
        state = shard(Workspace(Path("unused")), PipelineConfig(), 0, "model", return_state=True)
        return state.is_completed()  # not the state itself: that would become the flow's

    assert one_shard() is completed
    assert stage.calls == calls
