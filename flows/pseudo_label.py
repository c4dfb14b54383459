"""The pseudo-labeling flow: ingest -> train -> cam -> seeds -> grow -> crf -> evaluate -> publish.

No ``from __future__ import annotations`` here: Prefect reads the flow's
parameter annotations at run time to validate and to build deployment schemas.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, runtime, unmapped

from tasks.evaluate import evaluate
from tasks.ingest import ingest_demo
from tasks.maps import cam_shard, crf_shard, grow_shard, seeds_shard
from tasks.publish import publish_review
from tasks.report import report
from tasks.review import sync_reviews
from tasks.train import train
from wsss_core.config import PipelineConfig
from wsss_core.report.run_report import RunSummary
from wsss_core.stages.common import shard_count
from wsss_core.stages.evaluate_stage import Evaluation
from wsss_core.store.lock import workspace_lock
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
    report_path: str


def new_run_id() -> str:
    """Sortable and unique: UTC time plus the start of Prefect's flow-run id."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{str(runtime.flow_run.id or 'local')[:8]}"


def load_config(config_file: str | None) -> PipelineConfig:
    return PipelineConfig.from_yaml(Path(config_file)) if config_file else PipelineConfig()


@flow(name="pseudo-label", persist_result=False)
def pseudo_label(
    workspace: str,
    config_file: str | None = None,
    demo: bool = False,
    publish: bool = True,
) -> PipelineResult:
    """Turn image-level labels into review-ready pseudo-masks for one workspace.

    Args:
        workspace: the workspace directory (created when ``demo`` is set).
        config_file: YAML with any subset of the config sections; defaults otherwise.
        demo: generate the demo dataset and ingest it first.
        publish: publish the results to the FiftyOne review dataset.
    """
    config = load_config(config_file)
    ws = Workspace(Path(workspace))
    with workspace_lock(ws, "pseudo-label run"):
        return _pseudo_label(ws, config, demo, publish)


def _pseudo_label(
    ws: Workspace, config: PipelineConfig, demo: bool, publish: bool
) -> PipelineResult:
    logger = get_run_logger()
    if demo:
        ingest_demo(ws, config.demo)
    ws.require_manifest()
    if publish:
        # Reviewers' edits first: corrected labels feed this run, tags are never lost.
        sync_reviews(ws, config.review)

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    training = train(ws, config)
    seconds["train"] = time.perf_counter() - started
    shards = list(range(shard_count(ws, config)))
    computed: dict[str, int] = {}
    for stage, stage_task in MAP_STAGE_TASKS.items():
        started = time.perf_counter()
        outcomes = stage_task.map(unmapped(ws), unmapped(config), shards).result()
        computed[stage] = sum(outcome.computed for outcome in outcomes)
        seconds[stage] = time.perf_counter() - started
    started = time.perf_counter()
    evaluation = evaluate(ws, config)
    seconds["evaluate"] = time.perf_counter() - started
    dataset_name = None
    if publish:
        started = time.perf_counter()
        sync_reviews(ws, config.review)  # edits made while this run computed
        dataset_name = publish_review(ws, config).dataset_name
        seconds["publish"] = time.perf_counter() - started
    summary = RunSummary(
        new_run_id(), training.val_map, training.trained, seconds, computed, evaluation
    )
    written = report(ws, config, summary)
    logger.info(f"done: {len(shards)} shard(s), recomputed {computed}")
    return PipelineResult(
        str(ws.root),
        training.val_map,
        training.trained,
        evaluation,
        dataset_name,
        computed,
        str(written.directory / "report.md"),
    )
