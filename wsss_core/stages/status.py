"""What the next run would compute: per stage, the images whose outputs are up to date.

A shard's output counts as done exactly when the stage itself would skip it
(:func:`~wsss_core.stages.common.output_is_current`), so this report and a run
agree. Nothing is computed or written here; only the checkpoint is read (once,
for its hash and metadata), and the candidate of an unfinished training run.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import (
    STATUS_REMOVED,
    STATUS_UNLABELED,
    ImageRecord,
    Manifest,
    read_manifest,
    read_quarantine,
)
from wsss_core.model.checkpoint import load_checkpoint
from wsss_core.model.reuse import UnfinishedRun, can_reuse, training_lineage, unfinished_run
from wsss_core.stages.common import (
    config_heads,
    expected_lineage,
    input_hashes,
    map_stages,
    output_is_current,
)
from wsss_core.stages.image_failures import (
    ImageFailure,
    failed_image_lines,
    file_stamp,
    stored_failures,
)
from wsss_core.stages.quality import QualityEstimate, saved_quality
from wsss_core.store.maps import reusable_ids
from wsss_core.store.workspace import Workspace

ShardState = Literal["done", "stale", "missing"]


@dataclass(frozen=True)
class ImageCounts:
    usable: int  # status ok or unlabeled: what every stage processes
    unlabeled: int
    removed: int
    quarantined: int  # items of the last ingest's quarantine table


@dataclass(frozen=True)
class ModelStatus:
    """The classifier checkpoint (``models/classifier.pt``) as the next run will find it."""

    path: Path
    exists: bool
    file_hash: str | None = None
    val_map: float | None = None
    complete: bool = False
    config_current: bool = False  # trained with the current ``train`` section
    data_current: bool = False  # trained on the current labelled train/val images
    classes_current: bool = False  # trained on the manifest's class list
    error: str | None = None  # why an existing checkpoint could not be read
    # The verdicts of model.reuse.can_reuse, so status and runs agree:
    up_to_date: bool = False  # `wsss train` and `wsss run --retrain` reuse it
    kept_by_runs: bool = False  # `wsss run` (which keeps a current model) reuses it
    unfinished: UnfinishedRun | None = None  # a killed or failed run's candidate.pt


@dataclass(frozen=True)
class ShardStatus:
    index: int
    images: int
    state: ShardState
    reusable: int = 0  # images of a stale shard whose rows a run keeps (not recomputed)
    failed: tuple[ImageFailure, ...] = ()  # images of a done shard the stage could not compute


@dataclass(frozen=True)
class StageStatus:
    stage: str
    shards: tuple[ShardStatus, ...]

    def images(self, state: ShardState) -> int:
        """Images per state; a stale shard's reusable images count as done."""
        total = sum(shard.images for shard in self.shards if shard.state == state)
        kept = sum(shard.reusable for shard in self.shards if shard.state == "stale")
        if state == "done":
            return total + kept
        return total - kept if state == "stale" else total

    @property
    def done(self) -> int:
        return self.images("done")

    @property
    def stale(self) -> int:
        """Images whose output exists but was made from other inputs, config or model."""
        return self.images("stale")

    @property
    def missing(self) -> int:
        return self.images("missing")

    @property
    def pending(self) -> int:
        return self.stale + self.missing

    @property
    def failed(self) -> tuple[ImageFailure, ...]:
        return tuple(failure for shard in self.shards for failure in shard.failed)

    @property
    def pending_shards(self) -> tuple[int, ...]:
        return tuple(shard.index for shard in self.shards if shard.state != "done")


@dataclass(frozen=True)
class WorkspaceStatus:
    root: Path
    images: ImageCounts
    model: ModelStatus
    stages: tuple[StageStatus, ...]
    heads: tuple[str, ...] = ()  # a line on each learned head the config uses
    quality: QualityEstimate | None = None  # the last run's estimate, while it holds

    def stage(self, name: str) -> StageStatus:
        return next(stage for stage in self.stages if stage.stage == name)

    def table(self) -> list[str]:
        """The per-stage image counts as aligned text lines, header first."""
        header = ("stage", "done", "pending", "(stale", "missing")
        rows = [
            (s.stage, str(s.done), str(s.pending), str(s.stale), str(s.missing))
            for s in self.stages
        ]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            padded = [cells[0].ljust(widths[0])]
            padded += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join(padded)

        # The closing parenthesis hangs past the column so the numbers stay aligned.
        return [line(header) + ")", *(line(row) for row in rows)]

    def lines(self, shards: bool = False) -> list[str]:
        """The whole report; ``shards``: add each stage's pending shard indices."""
        counts = self.images
        out = [
            f"images: {counts.usable} usable ({counts.unlabeled} unlabeled), "
            f"{counts.removed} removed, {counts.quarantined} quarantined",
            f"classifier: {_describe_model(self.model, self.root)}",
        ]
        if self.model.unfinished is not None:
            out.append(_describe_unfinished(self.model.unfinished, self.root))
        if self.model.exists and not self.model.up_to_date and not self.model.kept_by_runs:
            out.append("  (a run that retrains it makes every map below stale)")
        out += self.heads
        out += self.table()
        out += failed_image_lines([f for stage in self.stages for f in stage.failed], limit=10)
        if self.quality is not None:
            out += self.quality.lines()
        else:
            out.append("quality of the masks: estimated by the next run's report")
        if shards:
            out += [f"{s.stage} pending shards: {_ranges(s.pending_shards)}" for s in self.stages]
        return out


def workspace_status(workspace: Workspace, config: PipelineConfig) -> WorkspaceStatus:
    """Done and pending images per map stage, and the classifier's state."""
    manifest = read_manifest(workspace)
    model = model_status(workspace, config, manifest)
    shards = manifest.shards(config.shard_size)
    stages = tuple(
        stage_status(workspace, config, stage, shards, model.file_hash)
        for stage in map_stages(config)
    )
    heads = head_lines(workspace, config, model.file_hash)
    quality = saved_quality(workspace, config, model.file_hash, manifest)
    counts = image_counts(workspace, manifest)
    return WorkspaceStatus(workspace.root, counts, model, stages, heads, quality)


def head_lines(
    workspace: Workspace, config: PipelineConfig, model_hash: str | None
) -> tuple[str, ...]:
    """A line on each head the config trains after the classifier: affinity, self-training."""
    lines = []
    for title, path_of in config_heads(config).items():
        if model_hash is None:
            lines.append(f"{title}: trained after the classifier")
            continue
        path = path_of(workspace, config, model_hash)
        name = _display(path, workspace.root)
        if path.exists():
            lines.append(f"{title}: {name}, current for this classifier and config")
        else:
            lines.append(
                f"{title}: none for this classifier and config yet; the next run trains {name}"
            )
    return tuple(lines)


def stage_status(
    workspace: Workspace,
    config: PipelineConfig,
    stage: str,
    shards: Sequence[Sequence[ImageRecord]],
    model_hash: str | None,
) -> StageStatus:
    statuses = []
    for index, records in enumerate(shards):
        state = shard_state(workspace, config, stage, index, records, model_hash)
        reusable = 0
        if state == "stale" and model_hash is not None:
            lineage = expected_lineage(config, stage, model_hash, records)
            path = workspace.shard_path(stage, index)
            reusable = len(reusable_ids(path, lineage, input_hashes(records)))
        failed = ()
        if state == "done":
            failed = tuple(stored_failures(stage, index, workspace.shard_path(stage, index)))
            retried = sum(f.stamp != file_stamp(f.uri) for f in failed)
            if retried:  # a failed image's file changed: the next run retries it
                state, reusable, failed = "stale", len(records) - retried, ()
        statuses.append(ShardStatus(index, len(records), state, reusable, failed))
    return StageStatus(stage, tuple(statuses))


def image_counts(workspace: Workspace, manifest: Manifest) -> ImageCounts:
    return ImageCounts(
        usable=len(manifest.records),
        unlabeled=sum(r.status == STATUS_UNLABELED for r in manifest.records),
        removed=sum(r.status == STATUS_REMOVED for r in manifest.all_rows),
        quarantined=sum(1 for _ in read_quarantine(workspace)),
    )


def model_status(workspace: Workspace, config: PipelineConfig, manifest: Manifest) -> ModelStatus:
    """Whether a run would reuse ``models/classifier.pt`` (the same rule as ``train_or_reuse``)."""
    path = workspace.model_path
    wanted = training_lineage(config, manifest)  # hashes every training row: once
    unfinished = unfinished_run(workspace.candidate_model_path, wanted)
    if not path.exists():
        return ModelStatus(path, exists=False, unfinished=unfinished)
    try:
        checkpoint = load_checkpoint(path)  # also gives the file hash: the file is read once
    except ValueError as error:
        return ModelStatus(path, exists=True, error=str(error), unfinished=unfinished)
    stored = checkpoint.lineage
    return ModelStatus(
        path,
        exists=True,
        unfinished=unfinished,
        file_hash=checkpoint.file_hash,
        val_map=checkpoint.val_map,
        complete=checkpoint.complete,
        config_current=stored.get("config_hash") == wanted["config_hash"],
        data_current=stored.get("training_data_hash") == wanted["training_data_hash"],
        classes_current=tuple(checkpoint.class_names) == tuple(manifest.class_names),
        up_to_date=can_reuse(checkpoint, wanted, manifest.class_names, keep_current=False),
        kept_by_runs=can_reuse(checkpoint, wanted, manifest.class_names, keep_current=True),
    )


def shard_state(
    workspace: Workspace,
    config: PipelineConfig,
    stage: str,
    shard_index: int,
    records: Sequence[ImageRecord],
    model_hash: str | None,
) -> ShardState:
    """``done`` when a run would skip the shard; without a model nothing is done."""
    path = workspace.shard_path(stage, shard_index)
    if model_hash is not None:
        lineage = expected_lineage(config, stage, model_hash, records)
        if output_is_current(stage, path, lineage):
            return "done"
    return "stale" if path.exists() else "missing"


def _describe_model(model: ModelStatus, root: Path) -> str:
    name = _display(model.path, root)
    if not model.exists:
        return f"none yet ({name}); the next run trains one"
    if model.error is not None:  # torch's messages run to paragraphs: the gist is enough
        reason = model.error.splitlines()[0].removeprefix(f"{model.path}: ")
        return f"{name}: " + textwrap.shorten(reason, 80, placeholder=" ...")
    text = f"{name}, validation mAP {model.val_map:.4f}, "
    if model.up_to_date:
        return text + "up to date with the train config"
    if model.kept_by_runs:  # only the training images changed
        return text + (
            "the labelled training images changed since: `wsss run` keeps it (new images "
            "only get maps), `wsss run --retrain` or `wsss train` retrains"
        )
    reasons = []
    if not model.complete:  # written by an older version, which trained into classifier.pt
        reasons.append("its training run is unfinished: `wsss train --resume` finishes it")
    if not model.config_current:
        reasons.append("trained with another train config")
    if not model.classes_current:
        reasons.append("trained on another class list")
    if not model.data_current:
        reasons.append("the labelled training images changed since")
    return text + "; ".join(reasons)


def _describe_unfinished(run: UnfinishedRun, root: Path) -> str:
    return f"  unfinished training run: {run.describe(_display(run.path, root))}"


def _display(path: Path, root: Path) -> Path:
    """A workspace file relative to the workspace, as the report names it."""
    return path.relative_to(root) if path.is_relative_to(root) else path


def _ranges(indices: Sequence[int]) -> str:
    """``0-3, 7, 9-10`` for sorted shard indices; ``none`` when empty."""
    if not indices:
        return "none"
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
