"""The label flow: cam -> seeds -> grown -> affinity -> crf over every shard of a trained workspace.

Each stage is a task mapped over the shards, on whatever task runner the flow
is given (threads by default, Dask for processes or machines). An image a
stage cannot compute (an unreadable file) is recorded, listed and skipped by
the later stages; its shard completes. A shard that fails (an error that is
not one image's) is reported and left out of the later stages; the other
shards carry on and keep their results, and the flow ends Failed, naming the
failed shards.

No ``from __future__ import annotations`` here: Prefect reads the flow's
parameter annotations at run time to validate and to build deployment schemas.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import Flow, flow, get_run_logger, unmapped
from prefect.futures import PrefectFutureList, wait
from prefect.states import Failed, State

from flows.entry import is_entry_flow
from flows.runners import RunnerOptions, make_task_runner
from tasks.affinity import affinity_head, affinity_shard
from tasks.cam import cam_shard
from tasks.crf import crf_shard
from tasks.grow import grow_shard
from tasks.seeds import seeds_shard
from tasks.self_training import self_training_head
from wsss_core.config import PipelineConfig
from wsss_core.stages.common import (
    ShardFailure,
    ShardOutcome,
    checked_model_hash,
    map_stages,
    shard_count,
)
from wsss_core.stages.crf_stage import RecoveredMask, recovered_masks
from wsss_core.stages.image_failures import ImageFailure, record_in_quarantine
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import flow_config, save_workspace_config

# Stage name -> its per-shard task, in pipeline order (as ALL_MAP_STAGES).
MAP_STAGE_TASKS = {
    "cam": cam_shard,
    "affinity": affinity_shard,
    "seeds": seeds_shard,
    "grown": grow_shard,
    "crf": crf_shard,
}


@dataclass(frozen=True)
class LabelResult:
    shards: int
    computed_shards: dict[str, int]
    stage_seconds: dict[str, float]
    failures: tuple[ShardFailure, ...] = field(default=())
    computed_images: dict[str, int] = field(default_factory=dict)
    recovered: tuple[RecoveredMask, ...] = ()  # current final masks with a class restored
    failed_images: tuple[ImageFailure, ...] = ()  # images a stage could not compute

    def failure_message(self) -> str:
        if not self.failures:
            return "no shard failed"
        first = self.failures[0]
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        return (
            f"{len(self.failures)} shard(s) failed, first {first}{more}; the other shards' "
            "results are saved and a re-run retries only the failed ones"
        )


def collect_shards(
    stage: str, shards: list[int], futures: PrefectFutureList
) -> tuple[list[ShardOutcome], list[ShardFailure]]:
    """Wait for every shard of a stage; the finished ones' outcomes and the failures."""
    wait(futures)  # every shard ends, done or failed, before the stage is judged
    done, failures = [], []
    for shard_index, future in zip(shards, futures, strict=True):
        try:
            done.append(future.result())
        except Exception as error:  # the task's own error, or its worker's death (Dask)
            notes = "".join(f" ({note})" for note in getattr(error, "__notes__", ()))
            failure = ShardFailure(stage, shard_index, f"{type(error).__name__}: {error}{notes}")
            get_run_logger().error(f"{failure}; its images skip the later stages")
            failures.append(failure)
    return done, failures


def label_shards(workspace: Workspace, config: PipelineConfig, model_hash: str) -> LabelResult:
    """Run the map stages over every shard (affinity only while it is on; call inside a flow)."""
    logger = get_run_logger()
    total = shard_count(workspace, config)
    alive = list(range(total))
    computed: dict[str, int] = {}
    images: dict[str, int] = {}
    seconds: dict[str, float] = {}
    failures: list[ShardFailure] = []
    failed_images: list[ImageFailure] = []
    for stage in map_stages(config):
        started = time.perf_counter()
        if stage == "affinity" and alive:  # its head learns from the CAMs of every shard
            affinity_head(workspace, config, model_hash)
        if stage == "crf" and alive and config.self_training.enabled:  # ... from first passes
            self_training_head(workspace, config, model_hash)
        stage_task = MAP_STAGE_TASKS[stage]
        futures = stage_task.map(unmapped(workspace), unmapped(config), alive, unmapped(model_hash))
        done, stage_failures = collect_shards(stage, alive, futures)
        computed[stage] = sum(outcome.computed for outcome in done)
        images[stage] = sum(outcome.computed_images for outcome in done)
        failures += stage_failures
        failed_images += [failure for outcome in done for failure in outcome.failed]
        alive = [outcome.shard_index for outcome in done]
        seconds[stage] = time.perf_counter() - started
    recovered = recovered_masks(workspace, config, model_hash)
    record_in_quarantine(workspace, failed_images)
    for failure in failed_images:
        logger.warning(f"{failure}; the later stages skip it")
    logger.info(
        f"{total} shard(s); shards recomputed {computed}, images computed {images}; "
        f"{len(failures)} shard(s) and {len(failed_images)} image(s) failed; "
        f"{len(recovered)} mask(s) with a recovered class"
    )
    return LabelResult(
        total, computed, seconds, tuple(failures), images, recovered, tuple(failed_images)
    )


@flow(name="label", persist_result=False, task_runner=make_task_runner(RunnerOptions()))
def label(
    workspace: str,
    config_file: str | None = None,
    config: PipelineConfig | None = None,
    model_hash: str | None = None,
) -> LabelResult | State:
    """Compute CAMs, seeds, grown regions and CRF masks for a workspace with a trained model.

    Up-to-date shards are skipped. Ends Failed when a shard failed (the result
    is still returned with the state, for callers that want the rest). Run on
    its own it saves its config as the workspace's; as a sub-flow its parent did.

    Args:
        workspace: the workspace directory (must hold a manifest and a classifier).
        config_file: YAML with any subset of the config sections, layered over
            the workspace's saved config (``config.yaml``); neither: the saved
            config, else the defaults.
        config: the validated config instead of ``config_file`` (the CLI and the
            pipeline flow pass it).
        model_hash: the classifier's hash when the caller has taken it (the
            pipeline flow, after training); default: checked and taken here.
    """
    ws = Workspace(Path(workspace))
    ws.require_manifest()
    config = flow_config(ws, config_file, config)
    with workspace_lock(ws, "label run"):
        if is_entry_flow():
            save_workspace_config(ws, config, "label run")
        _sweep_leftovers(ws)
        result = label_shards(ws, config, model_hash or checked_model_hash(ws))
    if result.failures:
        return Failed(message=result.failure_message(), data=result)
    return result


def _sweep_leftovers(ws: Workspace) -> None:
    """Remove what writes killed in an earlier run left.

    Safe because we hold the lock, as long as no task of a killed run is still
    running on a Dask cluster (README, "Scaling out with Dask").
    """
    removed = ws.remove_leftover_temp_files()
    if removed:
        get_run_logger().info(f"removed {removed} temporary file(s) of an interrupted run")


def label_with_runner(runner: RunnerOptions | None) -> Flow:
    """The label flow set to run its shards on ``runner`` (a bounded thread pool when None)."""
    if runner is None:
        return label  # its default: one shard per CPU core at a time
    return label.with_options(task_runner=make_task_runner(runner))
