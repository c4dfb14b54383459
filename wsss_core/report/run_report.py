"""A report per pipeline run: ``runs/<run_id>/report.md`` plus its PNG figures."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsss_core.config import PipelineConfig
from wsss_core.data.images import load_label_map, load_rgb
from wsss_core.data.manifest import ImageRecord, read_manifest, read_quarantine
from wsss_core.report.figures import StagePanels, save_iou_bars, save_stage_overlays
from wsss_core.stages.common import ShardFailure, shard_maps_current
from wsss_core.stages.crf_stage import RecoveredMask
from wsss_core.stages.evaluate_stage import Evaluation, thresholded_cam
from wsss_core.stages.image_failures import ImageFailure
from wsss_core.stages.quality import QualityEstimate, estimate_quality, save_quality
from wsss_core.store.atomic import write_text_atomic
from wsss_core.store.maps import read_cam_shard, read_label_shard
from wsss_core.store.workspace import Workspace

LABEL_STAGES = ("seeds", "grown", "crf")


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    val_map: float
    trained: bool
    stage_seconds: dict[str, float]
    computed_shards: dict[str, int]
    evaluation: Evaluation | None = None
    failures: tuple[ShardFailure, ...] = ()
    computed_images: dict[str, int] = field(default_factory=dict)
    model_behind_data: bool = False  # reused although training images changed since
    model_hash: str = ""  # the classifier the maps of this run come from
    recovered: tuple[RecoveredMask, ...] = ()  # final masks with a class restored
    failed_images: tuple[ImageFailure, ...] = ()  # images a stage could not compute


@dataclass(frozen=True)
class RunReport:
    directory: Path
    markdown: str
    figures: dict[str, Path] = field(default_factory=dict)


def _sample_panels(
    workspace: Workspace, config: PipelineConfig, model: str, count: int
) -> list[StagePanels]:
    """The first ``count`` labelled images of the shards whose maps are all current.

    Shards that failed this run, or hold maps of an older config or model, are
    passed over: the figure shows what this run produced.
    """
    manifest = read_manifest(workspace)
    records = manifest.by_id()
    panels: list[StagePanels] = []
    for shard_index, shard in enumerate(manifest.shards(config.shard_size)):
        if len(panels) == count:
            break
        if shard and shard_maps_current(workspace, config, model, shard_index, shard):
            panels += _shard_panels(workspace, config, records, shard_index, count - len(panels))
    return panels


def _shard_panels(
    workspace: Workspace,
    config: PipelineConfig,
    records: dict[str, ImageRecord],
    shard_index: int,
    count: int,
) -> list[StagePanels]:
    labels = {
        stage: {
            r.image_id: r.labels for r in read_label_shard(workspace.shard_path(stage, shard_index))
        }
        for stage in LABEL_STAGES
    }
    # Images a stage failed on have no final mask: nothing to draw.
    cams = [
        c
        for c in read_cam_shard(workspace.shard_path("cam", shard_index))
        if c.class_ids and c.image_id in labels["crf"]
    ][:count]
    walked = (
        {r.image_id: r for r in read_cam_shard(workspace.shard_path("affinity", shard_index))}
        if config.affinity.enabled
        else {}
    )
    panels = []
    for cam in cams:
        record = records[cam.image_id]
        maps: dict[str, np.ndarray] = {}
        if record.gt_uri:
            maps["ground truth"] = load_label_map(record.gt_uri)
        maps["cam"] = thresholded_cam(cam, config.cam.threshold)
        if cam.image_id in walked:
            maps["affinity"] = thresholded_cam(walked[cam.image_id], config.cam.threshold)
        maps.update({stage: labels[stage][cam.image_id] for stage in LABEL_STAGES})
        panels.append(StagePanels(cam.image_id, load_rgb(record.uri), cam.cams.max(axis=0), maps))
    return panels


def _table_cell(text: str) -> str:
    """One line without pipes: a markdown table cell."""
    return " ".join(text.split()).replace("|", "/")


def _markdown(
    workspace: Workspace,
    summary: RunSummary,
    figures: dict[str, Path],
    quality: QualityEstimate | None = None,
) -> str:
    manifest = read_manifest(workspace)
    quarantine = Counter(item.reason.split(":", 1)[0] for item in read_quarantine(workspace))
    lines = [
        f"# Run {summary.run_id}",
        "",
        f"- workspace: `{workspace.root}`",
        f"- images: {len(manifest)} in the manifest, {sum(quarantine.values())} quarantined",
        f"- classifier: validation mAP {summary.val_map:.4f} "
        f"({'trained this run' if summary.trained else 'reused'})"
        + (
            "; the labelled training images changed since it was trained "
            "(retrain to learn from them)"
            if summary.model_behind_data
            else ""
        ),
        "",
        "## Stages",
        "",
        "| stage | shards recomputed | images computed | seconds |",
        "| --- | ---: | ---: | ---: |",
    ]
    for stage, seconds in summary.stage_seconds.items():
        recomputed = summary.computed_shards.get(stage, "")
        images = summary.computed_images.get(stage, "")
        lines.append(f"| {stage} | {recomputed} | {images} | {seconds:.1f} |")
    if summary.failures:
        lines += [
            "",
            f"## Failed shards ({len(summary.failures)})",
            "",
            "Their images are missing from later stages; the other shards' results are "
            "saved. Re-run to retry them.",
            "",
            "| stage | shard | error |",
            "| --- | ---: | --- |",
        ]
        lines += [
            f"| {f.stage} | {f.shard_index} | {_table_cell(f.error)} |" for f in summary.failures
        ]
    if summary.failed_images:
        lines += [
            "",
            f"## Failed images ({len(summary.failed_images)})",
            "",
            "A stage could not compute them; the later stages skip them and the rest of "
            "their shards is saved. A run retries one when its file or the settings change.",
            "",
            "| stage | image | reason |",
            "| --- | --- | --- |",
        ]
        lines += [
            f"| {f.stage} | {f.image_id} | {_table_cell(f.reason)} |" for f in summary.failed_images
        ]
    if summary.recovered:
        lines += ["", *recovered_lines(summary.recovered, limit=20)]
    if summary.evaluation is not None:
        lines += [
            "",
            f"## mIoU over {summary.evaluation.images} images with ground truth",
            "",
            "| stage | mIoU | pixel accuracy | coverage |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {s.stage} | {s.miou:.4f} | {s.pixel_accuracy:.4f} | {s.coverage:.4f} |"
            for s in summary.evaluation.scores
        ]
    if quality is not None:
        lines += ["", "## Quality of the masks without a true mask", "", *quality.lines()]
    if quarantine:
        lines += ["", "## Quarantined", "", "| reason | images |", "| --- | ---: |"]
        lines += [f"| {reason} | {count} |" for reason, count in sorted(quarantine.items())]
    for title, path in figures.items():
        lines += ["", f"## {title}", "", f"![{title}]({path.name})"]
    return "\n".join(lines) + "\n"


def recovered_lines(recovered: tuple[RecoveredMask, ...], limit: int) -> list[str]:
    """What the report and the CLI say of masks whose class was restored."""
    shown = ", ".join(str(mask) for mask in recovered[:limit])
    more = f", and {len(recovered) - limit} more" if len(recovered) > limit else ""
    return [
        f"masks recovered: {len(recovered)} image(s) where the CRF (nearly) emptied a labelled "
        "class; its region was restored (from the affinity walk when on, else its grown "
        f"region) and review flags them `mask-recovered`, first in the queue: {shown}{more}"
    ]


def write_run_report(
    workspace: Workspace, config: PipelineConfig, summary: RunSummary, samples: int = 6
) -> RunReport:
    """Write the markdown report and its figures; returns where they are."""
    directory = workspace.runs_dir / summary.run_id
    directory.mkdir(parents=True, exist_ok=True)  # a run may have no figure to make it
    figures: dict[str, Path] = {}
    panels = _sample_panels(workspace, config, summary.model_hash, samples)
    if panels:
        figures["Stage overlays"] = save_stage_overlays(panels, directory / "overlays.png")
    if summary.evaluation is not None:
        evaluation = summary.evaluation
        figures["IoU per class"] = save_iou_bars(
            evaluation.label_names,
            {s.stage: s.iou_per_label for s in evaluation.scores},
            directory / "iou_per_class.png",
        )
    quality = None
    if summary.model_hash:
        quality = estimate_quality(workspace, config, summary.model_hash)
        save_quality(workspace, quality)
    markdown = _markdown(workspace, summary, figures, quality)
    path = directory / "report.md"
    write_text_atomic(path, markdown)
    return RunReport(directory, markdown, figures)
