"""`wsss compare`: several configs' maps of a workspace's images, side by side.

Each config's map stages run over the compared images through a
:class:`~wsss_core.store.comparison.ComparisonWorkspace`, with the stage
functions as the pipeline runs them, so a figure here is the one `wsss eval`
gives on a workspace whose maps that config made. Configs that agree on a
stage's sections share its shards; a repeated compare computes nothing. The
workspace's own files are only read, under its lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wsss_core.config import PipelineConfig, stage_config_hash
from wsss_core.data.manifest import Manifest
from wsss_core.model.comparison import comparison_classifier
from wsss_core.stages.common import checked_model_hash, map_stages, shard_count
from wsss_core.stages.compare_images import write_images_manifest
from wsss_core.stages.compare_scores import StageTally, score_maps
from wsss_core.stages.registry import map_stage
from wsss_core.store.atomic import remove_leftover_temp_files
from wsss_core.store.comparison import (
    COMPARE_DIR,
    ComparisonLayout,
    ComparisonWorkspace,
    ShardCost,
    save_cost,
    saved_cost,
)
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace


@dataclass(frozen=True)
class ComparisonRow:
    """One config's scores of one stage (shares are NaN when nothing could be counted)."""

    config: str
    stage: str
    miou: float
    fg_recall: float
    fg_wrong_class: float
    bg_to_fg: float
    emptied: float
    seconds_per_image: float  # compute seconds / images computed, when the shards were made
    images: int  # images scored (those with ground truth)
    maps: str  # the stage's maps directory, relative to the compare directory


@dataclass(frozen=True)
class Comparison:
    workspace: Path
    out_dir: Path
    images: int  # images compared, with or without ground truth
    rows: tuple[ComparisonRow, ...]


def default_out_dir(workspace: Workspace) -> Path:
    return workspace.root / COMPARE_DIR


def check_out_dir(workspace: Workspace, out_dir: Path) -> Path:
    """``out_dir`` resolved; refused inside the workspace unless under its ``compare/``."""
    out_dir = Path(out_dir).expanduser().resolve()
    inside = out_dir == workspace.root or workspace.root in out_dir.parents
    allowed = default_out_dir(workspace)
    if inside and out_dir != allowed and allowed not in out_dir.parents:
        raise ValueError(
            f"{out_dir}: inside the workspace; compare writes only under {allowed} "
            "or outside the workspace"
        )
    return out_dir


def compare_configs(
    workspace: Workspace,
    configs: Mapping[str, PipelineConfig],
    out_dir: Path,
    image_ids: Sequence[str] | None = None,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Comparison:
    """Compute (or reuse) each config's maps of the images and score every stage.

    ``configs``: name (the file name as given) -> config; ``image_ids``: the
    images to compare, default all usable ones; ``out_dir``: the compare
    directory (maps, masks, models trained for other train sections).
    """
    say = log or (lambda _: None)
    layout = ComparisonLayout(check_out_dir(workspace, out_dir))
    workspace.require_manifest()
    with workspace_lock(workspace, "compare"):
        remove_leftover_temp_files(layout.root)  # what a killed compare left (we hold the lock)
        key, manifest = write_images_manifest(workspace, layout, image_ids)
        if not any(record.gt_uri for record in manifest.records):
            raise ValueError(
                f"none of the {len(manifest.records)} compared image(s) has ground truth: "
                "nothing to score"
            )
        classifiers: dict[str, Path] = {}  # train hash -> checkpoint, one decision per hash
        rows: list[ComparisonRow] = []
        for name, config in configs.items():
            started = time.perf_counter()
            train_hash = stage_config_hash(config, "train")
            if train_hash not in classifiers:
                classifiers[train_hash] = comparison_classifier(
                    workspace, config, layout.models_dir(config), say, show_progress
                )
            say(f"{name}: maps from the classifier {classifiers[train_hash]}")
            view = layout.view(key, config, classifiers[train_hash])
            computed, costs = compute_maps(view, config, show_progress)
            tallies = score_maps(view, config, manifest)
            config_rows = [
                _row(name, stage, tallies[stage], costs[stage], view, layout)
                for stage in map_stages(config)
            ]
            rows += config_rows
            say(_summary(name, view, computed, config_rows[-1], time.perf_counter() - started))
    return Comparison(workspace.root, layout.root, len(manifest.records), tuple(rows))


def compute_maps(
    view: ComparisonWorkspace, config: PipelineConfig, show_progress: bool
) -> tuple[dict[str, int], dict[str, list[ShardCost]]]:
    """Run every map stage over every shard; (shards computed, known costs) per stage."""
    model_hash = checked_model_hash(view)
    shards = shard_count(view, config)
    computed: dict[str, int] = {}
    costs: dict[str, list[ShardCost]] = {}
    for stage in map_stages(config):
        entry = map_stage(stage)
        if entry.prepare is not None:
            entry.prepare(view, config, model_hash)
        run = entry.run
        computed[stage], costs[stage] = 0, []
        for shard_index in range(shards):
            outcome = run(view, config, shard_index, show_progress, model_hash)
            if outcome.computed:
                computed[stage] += 1
                save_cost(
                    view, stage, shard_index, ShardCost(outcome.seconds, outcome.computed_images)
                )
            cost = saved_cost(view, stage, shard_index)
            if cost is not None:
                costs[stage].append(cost)
    return computed, costs


def _row(
    name: str,
    stage: str,
    tally: StageTally,
    costs: list[ShardCost],
    view: ComparisonWorkspace,
    layout: ComparisonLayout,
) -> ComparisonRow:
    images = sum(cost.images for cost in costs)
    seconds = sum(cost.seconds for cost in costs) / images if images else float("nan")
    return ComparisonRow(
        config=name,
        stage=stage,
        miou=tally.confusion.mean_iou(),
        fg_recall=tally.coverage.fg_recall,
        fg_wrong_class=tally.coverage.fg_wrong_class,
        bg_to_fg=tally.coverage.bg_to_fg,
        emptied=tally.coverage.emptied,
        seconds_per_image=seconds,
        images=tally.images,
        maps=str(view.maps_dir(stage).relative_to(layout.root)),
    )


def _summary(
    name: str, view: ComparisonWorkspace, computed: dict[str, int], final: ComparisonRow, s: float
) -> str:
    shards = shard_count(view, view.config)
    done = ", ".join(f"{stage} {count}/{shards}" for stage, count in computed.items())
    return (
        f"{name}: shards computed {done}; {final.stage} mIoU {final.miou:.4f} "
        f"over {final.images} image(s); {s:.1f} s"
    )


def manifest_image_ids(manifest: Manifest, limit: int) -> list[str]:
    """The first ``limit`` usable images of the manifest (``--limit``)."""
    return [record.image_id for record in manifest.records[:limit]]
