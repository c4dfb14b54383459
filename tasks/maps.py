"""Tasks: the per-shard map stages (cam, seeds, grown, crf), each mapped over shards.

``model_hash`` is the classifier checkpoint's hash, taken once per run by the
flow; it is part of every output's lineage.
"""

from __future__ import annotations

import sys

from prefect import get_run_logger, task

from tasks._runtime import TASK_DEFAULTS
from wsss_core.config import PipelineConfig
from wsss_core.stages.cam_stage import run_cam_shard
from wsss_core.stages.common import ShardOutcome
from wsss_core.stages.crf_stage import run_crf_shard
from wsss_core.stages.grow_stage import run_grow_shard
from wsss_core.stages.seeds_stage import run_seeds_shard
from wsss_core.store.workspace import Workspace


def _progress() -> bool:
    """Progress bars for people at a terminal; plain logs for workers and CI."""
    return sys.stderr.isatty()


def _report(outcome: ShardOutcome) -> ShardOutcome:
    state = f"computed in {outcome.seconds:.1f}s" if outcome.computed else "up to date, skipped"
    get_run_logger().info(
        f"{outcome.stage} shard {outcome.shard_index}: {outcome.images} images, {state}"
    )
    return outcome


@task(name="cam-shard", retries=1, **TASK_DEFAULTS)
def cam_shard(
    workspace: Workspace, config: PipelineConfig, shard_index: int, model_hash: str
) -> ShardOutcome:
    return _report(run_cam_shard(workspace, config, shard_index, _progress(), model_hash))


@task(name="seeds-shard", retries=1, **TASK_DEFAULTS)
def seeds_shard(
    workspace: Workspace, config: PipelineConfig, shard_index: int, model_hash: str
) -> ShardOutcome:
    return _report(run_seeds_shard(workspace, config, shard_index, _progress(), model_hash))


@task(name="grow-shard", retries=1, **TASK_DEFAULTS)
def grow_shard(
    workspace: Workspace, config: PipelineConfig, shard_index: int, model_hash: str
) -> ShardOutcome:
    return _report(run_grow_shard(workspace, config, shard_index, _progress(), model_hash))


@task(name="crf-shard", retries=1, **TASK_DEFAULTS)
def crf_shard(
    workspace: Workspace, config: PipelineConfig, shard_index: int, model_hash: str
) -> ShardOutcome:
    return _report(run_crf_shard(workspace, config, shard_index, _progress(), model_hash))
