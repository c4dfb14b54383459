"""The pseudo-labeling flow: ingest -> train -> cam -> seeds -> grow -> crf -> evaluate -> publish.

No ``from __future__ import annotations`` here: Prefect reads the flow's
parameter annotations at run time to validate and to build deployment schemas.
"""

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, unmapped

from tasks.evaluate import evaluate
from tasks.ingest import ingest_demo
from tasks.maps import cam_shard, crf_shard, grow_shard, seeds_shard
from tasks.publish import publish_review
from tasks.train import train
from wsss_core.config import PipelineConfig
from wsss_core.stages.common import shard_count
from wsss_core.stages.evaluate_stage import Evaluation
from wsss_core.store.workspace import Workspace

# Stage name -> its per-shard task, in pipeline order.
MAP_STAGE_TASKS = {"cam": cam_shard, "seeds": seeds_shard, "grown": grow_shard, "crf": crf_shard}


@dataclass(frozen=True)
class PipelineResult:
    workspace: str
    val_map: float
    trained: bool
    evaluation: Evaluation | None
    dataset_name: str | None
    computed_shards: dict[str, int]


def load_config(config_file: str | None) -> PipelineConfig:
    return PipelineConfig.from_yaml(Path(config_file)) if config_file else PipelineConfig()


@flow(name="pseudo-label", persist_result=False)
def pseudo_label(
    workspace: str,
    config_file: str | None = None,
    demo: bool = False,
    publish: bool = True,
) -> PipelineResult:
    """Turn image-level labels into reviewed-ready pseudo-masks for one workspace.

    Args:
        workspace: the workspace directory (created when ``demo`` is set).
        config_file: YAML with any subset of the config sections; defaults otherwise.
        demo: generate the demo dataset and ingest it first.
        publish: publish the results to the FiftyOne review dataset.
    """
    logger = get_run_logger()
    config = load_config(config_file)
    ws = Workspace(Path(workspace))
    if demo:
        ingest_demo(ws, config.demo)
    ws.require_manifest()

    training = train(ws, config)
    shards = list(range(shard_count(ws, config)))
    computed: dict[str, int] = {}
    for stage, stage_task in MAP_STAGE_TASKS.items():
        outcomes = stage_task.map(unmapped(ws), unmapped(config), shards).result()
        computed[stage] = sum(outcome.computed for outcome in outcomes)
    evaluation = evaluate(ws, config)
    dataset_name = publish_review(ws, config.review).dataset_name if publish else None
    logger.info(f"done: {len(shards)} shard(s), recomputed {computed}")
    return PipelineResult(
        str(ws.root), training.val_map, training.trained, evaluation, dataset_name, computed
    )
