"""The pseudo-labeling flow: ingest -> train -> cam -> seeds -> grow -> affinity -> crf ->
evaluate -> publish.

No ``from __future__ import annotations`` here: Prefect reads the flow's
parameter annotations at run time to validate and to build deployment schemas.
"""

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, runtime
from prefect.states import Failed, State

from flows.label import LabelResult, label_with_runner
from flows.runners import RunnerOptions
from tasks.evaluate import evaluate
from tasks.ingest import ingest_demo, reingest_source
from tasks.publish import publish_review
from tasks.report import report
from tasks.review import sync_reviews
from tasks.train import train
from wsss_core.config import PipelineConfig
from wsss_core.report.run_report import RunSummary
from wsss_core.stages.common import ShardFailure
from wsss_core.stages.crf_stage import RecoveredMask
from wsss_core.stages.evaluate_stage import Evaluation
from wsss_core.stages.image_failures import ImageFailure
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import flow_config, save_workspace_config


@dataclass(frozen=True)
class PipelineResult:
    workspace: str
    val_map: float
    trained: bool
    evaluation: Evaluation | None
    dataset_name: str | None
    computed_shards: dict[str, int]
    report_path: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failures: tuple[ShardFailure, ...] = ()
    computed_images: dict[str, int] = field(default_factory=dict)
    model_behind_data: bool = False  # reused although training images changed since
    recovered: tuple[RecoveredMask, ...] = ()  # final masks with a class restored
    failed_images: tuple[ImageFailure, ...] = ()  # images a stage could not compute


def new_run_id() -> str:
    """Sortable and unique: UTC time plus the start of Prefect's flow-run id."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{str(runtime.flow_run.id or 'local')[:8]}"


@flow(name="pseudo-label", persist_result=False)
def pseudo_label(
    workspace: str,
    config_file: str | None = None,
    demo: bool = False,
    publish: bool = True,
    refresh: bool = False,
    retrain: bool = False,
    runner: RunnerOptions | None = None,
    config: PipelineConfig | None = None,
) -> PipelineResult | State:
    """Turn image-level labels into review-ready pseudo-masks for one workspace.

    Args:
        workspace: the workspace directory (created when ``demo`` is set).
        config_file: YAML with any subset of the config sections, layered over
            the config the workspace's last run saved (``config.yaml``; its keys
            win, the rest is kept); neither: the saved config, else the defaults.
            What deployments pass.
        config: the validated config instead of ``config_file`` (what the CLI
            passes, having read it once); the label sub-flow gets it too.
        demo: generate the demo dataset and ingest it first.
        publish: publish the results to the FiftyOne review dataset.
        refresh: read the workspace's source again first, so images added since
            the last run are picked up (what the nightly deployment does; a demo
            run regenerates and ingests its data anyway).
        retrain: retrain when the labelled training images changed since the
            classifier was trained. Off by default: the current classifier is
            kept and only new or changed images get maps.
        runner: where the per-shard tasks run (threads by default; Dask).
    """
    ws = Workspace(Path(workspace))
    config = flow_config(ws, config_file, config)
    with workspace_lock(ws, "pseudo-label run"):
        save_workspace_config(ws, config, "pseudo-label run")  # the only save of the run
        return _pseudo_label(
            ws,
            config,
            demo=demo,
            publish=publish,
            refresh=refresh,
            retrain=retrain,
            runner=runner,
        )


def _pseudo_label(
    ws: Workspace,
    config: PipelineConfig,
    *,
    demo: bool,
    publish: bool,
    refresh: bool,
    retrain: bool,
    runner: RunnerOptions | None,
) -> PipelineResult | State:
    logger = get_run_logger()
    if demo:
        ingest_demo(ws, config.demo)
    elif refresh:
        reingest_source(ws, config.demo, config.review)
    ws.require_manifest()
    if publish:
        # Reviewers' edits first: corrected labels feed this run, tags are never lost.
        sync_reviews(ws, config.review)

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    training = train(ws, config, keep_current=not retrain)
    seconds["train"] = time.perf_counter() - started
    labelled = _run_label(ws, config, training.model_hash, runner)
    seconds.update(labelled.stage_seconds)

    evaluation, dataset_name = None, None
    if labelled.failures:
        logger.error("evaluation and publishing skipped: " + labelled.failure_message())
    else:
        started = time.perf_counter()
        evaluation = evaluate(ws, config, training.model_hash)
        seconds["evaluate"] = time.perf_counter() - started
        if publish:
            started = time.perf_counter()
            sync_reviews(ws, config.review)  # edits made while this run computed
            dataset_name = publish_review(ws, config).dataset_name
            seconds["publish"] = time.perf_counter() - started
    summary = RunSummary(
        new_run_id(),
        training.val_map,
        training.trained,
        seconds,
        labelled.computed_shards,
        evaluation,
        labelled.failures,
        labelled.computed_images,
        training.data_changed,
        training.model_hash,
        labelled.recovered,
        labelled.failed_images,
    )
    written = report(ws, config, summary)
    result = PipelineResult(
        str(ws.root),
        training.val_map,
        training.trained,
        evaluation,
        dataset_name,
        labelled.computed_shards,
        str(written.directory / "report.md"),
        seconds,
        labelled.failures,
        labelled.computed_images,
        training.data_changed,
        labelled.recovered,
        labelled.failed_images,
    )
    if labelled.failures:
        return Failed(message=labelled.failure_message(), data=result)
    return result


def _run_label(
    ws: Workspace, config: PipelineConfig, model_hash: str, runner: RunnerOptions | None
) -> LabelResult:
    """The label flow as a sub-flow on the chosen runner; its result even when shards failed.

    It gets this run's config and the model hash training took: nothing is read twice.
    """
    state = label_with_runner(runner)(
        workspace=str(ws.root), config=config, model_hash=model_hash, return_state=True
    )
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result  # the flow itself broke (not one shard): nothing to carry on with
    return result
