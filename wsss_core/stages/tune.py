"""`wsss tune`: settings chosen on the workspace's own true masks, checked on held-out ones.

1. The true masks (ground truth, then approved masks: ``tuning/truth.py``) are
   split by class, seeded, into a tuning part and a held-out part
   (``tuning/split.py``); too few are refused.
2. The search (:func:`search_settings`) runs the grids of ``tuning/space.py``
   one after another over the tuning images only, each candidate's maps
   computed as `wsss compare` computes them, under ``WS/tune/`` (a stage's
   maps are shared by every candidate that agrees on its sections, and kept
   across calls). A candidate replaces the best so far only when it gains at
   least :data:`MIN_GAIN` mIoU on the tuning images, in at least
   :data:`MIN_CONFIDENCE` of paired bootstrap resamples of them. It reads no
   true mask of a held-out image.
3. Then, and only then, the default and the tuned settings are scored on the
   held-out images (:func:`held_out_report`): mIoU with a bootstrap interval,
   the paired gain and the IoU per class.

The heads. Every config is scored with the affinity and self-training heads a
run of it would have (``stages/tune_heads.py``): trained as a run trains them
when no run has. A grid whose candidates would each need their own head (a CAM
setting retrains both; a first-pass setting the self-training head) is scored
without that head and those after it (:func:`heads_left_out`): on the maps the
head learns from, since a head is as good as what it learns from, and training
one per candidate would cost minutes each. The later grids, and the held-out
check, then use the heads trained once for the settings those grids chose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import read_manifest
from wsss_core.metrics import mean_iou
from wsss_core.model.comparison import workspace_classifier_fits
from wsss_core.stages.common import config_heads, shard_count
from wsss_core.stages.compare import compute_maps
from wsss_core.stages.compare_images import write_images_manifest
from wsss_core.stages.evaluate_stage import stage_predictions
from wsss_core.stages.tune_heads import HEAD_SECTION, TuneHeads, acts_on, head_lineages
from wsss_core.store.atomic import remove_leftover_temp_files
from wsss_core.store.comparison import ComparisonLayout, ShardCost
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace
from wsss_core.tuning.scores import (
    Estimate,
    ImageScores,
    estimate,
    gain_confidence,
    paired_gain,
    score_images,
)
from wsss_core.tuning.space import FINAL_STAGE, Grid, get_value, grids_for, with_changes
from wsss_core.tuning.split import TruthSplit, split_true_masks
from wsss_core.tuning.truth import TrueMask, describe_sources, true_masks

TUNE_DIR = "tune"
MIN_GAIN = 0.003  # tuning-set mIoU a change must add: smaller gains are noise on 30 images
# ... and in this share of paired bootstrap resamples of the tuning images: a gain
# that a few images carry does not carry over to the held-out ones.
MIN_CONFIDENCE = 0.9
# The held-out check computes the maps of two configs over the held-out images;
# the search keeps this many times the start settings' cost on the tuning images for it.
HELD_OUT_RESERVE = 2.5
# ... and time to train the heads of the settings it chose, once: this many times what
# the workspace's heads took in its run, plus the maps they learn from (a head's time
# is given back once the settings have it and no later grid can change it).
HEAD_RESERVE = 1.2
MAPS_RESERVE = "maps"  # the reserve key of the maps the heads learn from


@dataclass(frozen=True)
class Trial:
    grid: str
    changes: dict[str, Any]  # the grid's values in this trial
    miou: float  # on the tuning images, of the grid's scored stage (see heads_left_out)
    seconds: float


@dataclass(frozen=True)
class SearchResult:
    start: PipelineConfig
    tuned: PipelineConfig
    trials: tuple[Trial, ...]
    seconds: float
    finished: bool  # False: the budget ran out before every grid was searched

    @property
    def changes(self) -> dict[str, Any]:
        """The keys whose tuned value differs from the start, dotted (``crf.bilateral_srgb``)."""
        keys = dict.fromkeys(key for trial in self.trials for key in trial.changes)
        return {
            key: get_value(self.tuned, key)
            for key in keys
            if get_value(self.tuned, key) != get_value(self.start, key)
        }


@dataclass(frozen=True)
class HeldOutReport:
    default: Estimate  # the start settings (the workspace's), final masks
    tuned: Estimate
    gain: Estimate  # tuned - default, paired over the same images
    label_names: tuple[str, ...]  # background first


@dataclass(frozen=True)
class TuneResult:
    split: TruthSplit
    search: SearchResult
    held_out: HeldOutReport
    sources: str = ""  # e.g. "60 (60 ground truth)"
    seconds: float = 0.0


def tune_workspace(
    workspace: Workspace,
    config: PipelineConfig,
    budget_seconds: float,
    seed: int = 0,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
    grids: Sequence[Grid] | None = None,
) -> TuneResult:
    """Split the true masks, search on one part, report on the other (module docstring)."""
    say = log or (lambda _: None)
    started = time.perf_counter()
    workspace.require_manifest()
    with workspace_lock(workspace, "tune"):
        manifest = read_manifest(workspace)
        masks = true_masks(workspace, manifest)
        split = split_true_masks(masks, seed)
        say(
            f"true masks: {describe_sources(masks)}; tuning on {len(split.tuning)}, "
            f"holding out {len(split.held_out)} (seed {seed})"
        )
        layout = ComparisonLayout(workspace.root / TUNE_DIR)
        remove_leftover_temp_files(layout.root)
        if not workspace_classifier_fits(workspace, config):
            raise ValueError(
                f"{workspace.model_path}: no classifier a run would keep for this config; "
                "tuning chooses the settings after the classifier: run `wsss run` first"
            )
        classifier = workspace.model_path
        heads = TuneHeads(workspace, layout, classifier, config, say)
        reserve_share = len(split.held_out) / max(len(split.tuning), 1)
        search = search_settings(
            workspace,
            layout,
            classifier,
            config,
            split.tuning,
            budget_seconds,
            reserve_share,
            show_progress,
            say,
            grids,
            heads,
        )
        held_out = held_out_report(
            workspace, layout, classifier, config, search.tuned, split.held_out, seed, heads
        )
    return TuneResult(
        split, search, held_out, describe_sources(masks), time.perf_counter() - started
    )


class _Scorer:
    """Maps of one image set for any config (cached under the layout) and their scores."""

    def __init__(
        self,
        workspace: Workspace,
        layout: ComparisonLayout,
        classifier: Path,
        masks: Sequence[TrueMask],
        heads: TuneHeads,
    ) -> None:
        self.layout, self.classifier, self.heads = layout, classifier, heads
        self.costs: dict[str, list[ShardCost]] = {}  # per stage, of the last config scored
        self.key, manifest = write_images_manifest(
            workspace, layout, [mask.image_id for mask in masks]
        )
        self.truth = {mask.image_id: mask.path for mask in masks}
        self.num_labels = len(manifest.class_names) + 1
        self.label_names = ("background", *manifest.class_names)

    def scores(self, config: PipelineConfig, stage: str) -> ImageScores:
        view = self.layout.view(self.key, config, self.classifier, self.heads.frozen(config))
        _, self.costs = compute_maps(view, config, show_progress=False)
        predictions = (
            prediction
            for shard_index in range(shard_count(view, config))
            for prediction in stage_predictions(view, config, stage, shard_index)
        )
        return score_images(predictions, self.truth, self.num_labels)


def search_settings(
    workspace: Workspace,
    layout: ComparisonLayout,
    classifier: Path,
    start: PipelineConfig,
    tuning: Sequence[TrueMask],
    budget_seconds: float,
    reserve_share: float = 1.0,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
    grids: Sequence[Grid] | None = None,
    heads: TuneHeads | None = None,
) -> SearchResult:
    """The grids in order over the tuning images; the best config within the budget.

    ``reserve_share``: held-out images per tuning image, to keep time for the
    held-out check (see :data:`HELD_OUT_RESERVE`); ``grids``: default
    ``tuning.space.grids_for(start)``; ``heads``: default a
    :class:`TuneHeads` of the workspace, which needs the heads a run of
    ``start`` trained (a clear error without them).
    """
    say = log or (lambda _: None)
    started = time.perf_counter()
    heads = heads or TuneHeads(workspace, layout, classifier, start, say)
    scorer = _Scorer(workspace, layout, classifier, tuning, heads)
    best = start
    trials: list[Trial] = []
    grids = grids_for(start) if grids is None else grids
    total = sum(len(list(grid.candidates(start))) for grid in grids)
    bar = tqdm(total=total, desc="tune", unit="setting", disable=not show_progress)
    # The checks' time, from the start settings' full cost (their heads on) on these images.
    start_seconds = _timed(lambda: scorer.scores(start, FINAL_STAGE))
    reserves = _head_reserves(heads, start, _head_maps_seconds(scorer.costs))
    deadline = started + budget_seconds - sum(reserves.values())
    deadline -= HELD_OUT_RESERVE * reserve_share * start_seconds
    finished = True
    for index, grid in enumerate(grids):
        incumbent: ImageScores | None = None
        left_out = heads_left_out(grid, best, heads.model_hash)
        for changes in grid.candidates(best):
            deadline += _settled_reserves(reserves, heads, best, grids[index:])
            now = time.perf_counter()
            if now >= deadline:
                finished = False
                break
            candidate = with_changes(best, changes)
            assert candidate is not None  # Grid.candidates yields valid settings only
            scores = scorer.scores(_without_heads(candidate, left_out), grid.scored_stage)
            seconds = time.perf_counter() - now
            trials.append(Trial(grid.name, changes, _miou(scores), seconds))
            bar.update(1)
            if incumbent is None:  # the grid's first candidate is the current setting
                incumbent = scores
            elif _beats(scores, incumbent):
                best, incumbent = candidate, scores
                bar.set_postfix_str(f"{grid.name}: {_miou(scores):.3f}")
        if not finished:
            say(f"budget spent: stopped in '{grid.name}'; the settings found so far are kept")
            break
        if incumbent is not None:
            without = f", scored without the {' and '.join(left_out)}" if left_out else ""
            say(f"{grid.name}: best {_miou(incumbent):.4f} ({_describe(grid.keys, best)}{without})")
        deadline += _settled_reserves(reserves, heads, best, grids[index + 1 :])
    bar.close()
    return SearchResult(start, best, tuple(trials), time.perf_counter() - started, finished)


def retrained_heads(grid: Grid, best: PipelineConfig, model_hash: str) -> set[str]:
    """The heads some candidate of ``grid`` changes the lineage of: a run would retrain them."""
    current = head_lineages(best, model_hash)
    changed: set[str] = set()
    for changes in grid.candidates(best):
        config = with_changes(best, changes)
        assert config is not None  # Grid.candidates yields valid settings only
        for title, lineage in head_lineages(config, model_hash).items():
            if title in current and lineage != current[title]:
                changed.add(title)
    return changed


def heads_left_out(grid: Grid, best: PipelineConfig, model_hash: str) -> tuple[str, ...]:
    """The heads ``grid`` is scored without: those it would retrain, and every later one.

    A head a candidate changes the lineage of would have to be trained for
    that candidate alone, and the self-training head learns from maps the
    affinity head shapes, so leaving one out leaves out those after it. A head
    that does not reach the scored stage is left out too: it changes nothing
    there, and a head no run trained would be trained for nothing.
    """
    titles = list(config_heads(best))
    retrained = retrained_heads(grid, best, model_hash)
    for index, title in enumerate(titles):
        if title in retrained or not acts_on(title, grid.scored_stage):
            return tuple(titles[index:])
    return ()


def _without_heads(config: PipelineConfig, titles: Sequence[str]) -> PipelineConfig:
    if not titles:
        return config
    switched_off = with_changes(config, {f"{HEAD_SECTION[t]}.enabled": False for t in titles})
    assert switched_off is not None  # switching a stage off breaks no bound
    return switched_off


def _head_reserves(
    heads: TuneHeads, start: PipelineConfig, per_image_seconds: float
) -> dict[str, float]:
    """Time to train each head once for the chosen settings, by title, and their maps.

    Each head as long as the workspace's took (the self-training head's time
    holds its first passes), with a margin; the maps they learn from
    (:data:`MAPS_RESERVE`) at the start settings' cost per image of them.
    """
    reserves = {
        title: HEAD_RESERVE * seconds for title, seconds in heads.training_seconds().items()
    }
    if reserves:
        maps = per_image_seconds * heads.training_images(start)
        reserves[MAPS_RESERVE] = HEAD_RESERVE * maps
    return reserves


def _settled_reserves(
    reserves: dict[str, float], heads: TuneHeads, best: PipelineConfig, grids_left: Sequence[Grid]
) -> float:
    """Take out and return the time kept for heads the result has and no grid left retrains.

    The maps they learn from are given back once that holds for every head.
    """
    if not reserves:  # all given back (or no head): skip the lineages of every grid left
        return 0.0
    later = set().union(*(retrained_heads(g, best, heads.model_hash) for g in grids_left))
    settled = heads.available(best) - later
    freed = sum(reserves.pop(title, 0.0) for title in settled)
    if settled >= set(config_heads(best)):
        freed += reserves.pop(MAPS_RESERVE, 0.0)
    return freed


def _head_maps_seconds(costs: dict[str, list[ShardCost]]) -> float:
    """Seconds per image of the maps the heads learn from (every stage before the crf)."""
    total = 0.0
    for stage, shard_costs in costs.items():
        images = sum(cost.images for cost in shard_costs)
        if stage != FINAL_STAGE and images:
            total += sum(cost.seconds for cost in shard_costs) / images
    return total


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def held_out_report(
    workspace: Workspace,
    layout: ComparisonLayout,
    classifier: Path,
    default: PipelineConfig,
    tuned: PipelineConfig,
    held_out: Sequence[TrueMask],
    seed: int = 0,
    heads: TuneHeads | None = None,
) -> HeldOutReport:
    """Final-mask mIoU of both configs on the held-out images, each with its own heads."""
    heads = heads or TuneHeads(workspace, layout, classifier, default)
    scorer = _Scorer(workspace, layout, classifier, held_out, heads)
    default_scores = scorer.scores(default, FINAL_STAGE)
    tuned_scores = scorer.scores(tuned, FINAL_STAGE)
    return HeldOutReport(
        estimate(default_scores, seed),
        estimate(tuned_scores, seed),
        paired_gain(tuned_scores, default_scores, seed),
        scorer.label_names,
    )


def _beats(candidate: ImageScores, incumbent: ImageScores) -> bool:
    """A clear gain on the tuning images: large enough, and not carried by a few images."""
    if _miou(candidate) < _miou(incumbent) + MIN_GAIN:
        return False
    return gain_confidence(candidate, incumbent) >= MIN_CONFIDENCE


def _miou(scores: ImageScores) -> float:
    return float(mean_iou(scores.matrices.sum(axis=0)))


def _describe(keys: Sequence[str], config: PipelineConfig) -> str:
    return ", ".join(f"{key} {get_value(config, key)}" for key in keys)
