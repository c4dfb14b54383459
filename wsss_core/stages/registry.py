"""The one table of map stages: each stage's per-shard function and what it needs first.

Keyed like :data:`wsss_core.store.workspace.ALL_MAP_STAGES` (pipeline order
lives there); code that walks the stages iterates
:func:`~wsss_core.stages.common.map_stages` of its config and looks each one
up here, so a new stage is one entry in each place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from wsss_core.config import PipelineConfig
from wsss_core.stages.affinity_stage import ensure_head, run_affinity_shard
from wsss_core.stages.cam_stage import run_cam_shard
from wsss_core.stages.common import ShardOutcome
from wsss_core.stages.crf_stage import run_crf_shard
from wsss_core.stages.grow_stage import run_grow_shard
from wsss_core.stages.seeds_stage import run_seeds_shard
from wsss_core.stages.self_training_stage import ensure_segmentation_head
from wsss_core.store.workspace import ALL_MAP_STAGES, Workspace

# run(workspace, config, shard_index, show_progress, model_hash) -> what it did
ShardRunner = Callable[[Workspace, PipelineConfig, int, bool, str | None], ShardOutcome]
# prepare(workspace, config, model_hash): once before a stage's shards (train what it needs)
Preparation = Callable[[Workspace, PipelineConfig, str], object]


@dataclass(frozen=True)
class MapStage:
    run: ShardRunner
    prepare: Preparation | None = None


MAP_STAGE_RUNNERS: dict[str, MapStage] = {
    "cam": MapStage(run_cam_shard),
    "affinity": MapStage(run_affinity_shard, prepare=ensure_head),
    "seeds": MapStage(run_seeds_shard),
    "grown": MapStage(run_grow_shard),
    "crf": MapStage(run_crf_shard, prepare=ensure_segmentation_head),  # no-op while off
}


def map_stage(name: str) -> MapStage:
    """The table's entry for a stage of ``ALL_MAP_STAGES``; a clear error when it has none."""
    try:
        return MAP_STAGE_RUNNERS[name]
    except KeyError:
        raise KeyError(
            f"map stage {name!r} (in ALL_MAP_STAGES {ALL_MAP_STAGES}) has no entry in "
            "wsss_core/stages/registry.py MAP_STAGE_RUNNERS"
        ) from None
