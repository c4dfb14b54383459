"""What every per-shard stage shares: lineage, freshness, outcome reporting."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from wsss_core.config import PipelineConfig, stage_config_hash
from wsss_core.data.manifest import ImageRecord, Manifest, read_manifest
from wsss_core.model import affinity_head, segmentation_head
from wsss_core.model.checkpoint import file_hash, load_checkpoint, require_complete
from wsss_core.stages.image_failures import ImageFailure, known_failures
from wsss_core.store.maps import (
    Lineage,
    cam_shard_has_class_scores,
    read_failed,
    read_lineage,
    reusable_ids,
    rows_of,
    stored_image_ids,
)
from wsss_core.store.workspace import ALL_MAP_STAGES, Workspace


@dataclass(frozen=True)
class ShardOutcome:
    """What one stage did to one shard."""

    stage: str
    shard_index: int
    images: int
    computed: bool  # False: an up-to-date output already existed
    seconds: float = 0.0
    computed_images: int = 0  # images computed; the rest of a rewritten shard was kept
    failed: tuple[ImageFailure, ...] = ()  # the shard's images this stage could not compute


@dataclass(frozen=True)
class ShardFailure:
    """A shard whose stage raised: later stages skip it, the other shards carry on."""

    stage: str
    shard_index: int
    error: str

    def __str__(self) -> str:
        return f"{self.stage} shard {self.shard_index}: {self.error}"


def records_hash(records: Sequence[ImageRecord]) -> str:
    """Content hash of a shard's inputs: ids, pixels (sha256) and labels."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(f"{record.image_id}|{record.sha256}|{record.labels}".encode())
    return digest.hexdigest()[:16]


def input_hashes(records: Sequence[ImageRecord]) -> dict[str, str]:
    """Image id -> hash of that image's input (pixels and labels), in shard order."""
    return {
        record.image_id: hashlib.sha256(
            f"{record.image_id}|{record.sha256}|{record.labels}".encode()
        ).hexdigest()[:16]
        for record in records
    }


@dataclass(frozen=True)
class RewritePlan:
    """How a shard's output is brought up to date: what to compute, what to keep."""

    stage: str
    path: Path  # the shard's output file
    lineage: Lineage  # what the rewritten output is stored with
    inputs: dict[str, str]  # image id -> input hash, in shard order (stored with the output)
    kept_ids: tuple[str, ...]  # images whose previous rows are still valid
    todo: list[ImageRecord]  # the images to compute
    known_failed: tuple[ImageFailure, ...]  # failures that still hold (same input and file)

    def reused(self) -> pa.Table | None:
        """The previous output's rows that are kept (read when the shard is rewritten)."""
        return rows_of(self.path, self.kept_ids)

    def unchanged(self) -> bool:
        """True when the output on disk is already what a rewrite would produce."""
        return not self.todo and output_is_current(self.stage, self.path, self.lineage)


def plan_rewrite(
    path: Path,
    lineage: Lineage,
    records: Sequence[ImageRecord],
    stage: str,
    shard_index: int,
    available: set[str] | None = None,
) -> RewritePlan:
    """Keep the rows and failures of unchanged images; compute the others.

    ``available``: the images the stage's inputs have (the stages above may
    have failed on some); the others are skipped, neither computed nor failed.
    """
    inputs = input_hashes(records)
    reusable = set(reusable_ids(path, lineage, inputs))
    if available is not None:
        reusable &= available  # a row is kept only while its inputs still exist
    with_rows = stored_image_ids(path) & reusable if reusable else set()
    known = known_failures(
        stage, shard_index, read_failed(path) if reusable else {}, records, reusable - with_rows
    )
    settled = with_rows | {failure.image_id for failure in known}
    todo = [
        r
        for r in records
        if r.image_id not in settled and (available is None or r.image_id in available)
    ]
    kept = tuple(r.image_id for r in records if r.image_id in with_rows)
    return RewritePlan(stage, path, lineage, inputs, kept, todo, tuple(known))


def current_model_hash(workspace: Workspace) -> str:
    """Hash of the current classifier checkpoint (every map depends on it).

    It reads the whole file: flows take it once per run and pass it to every shard.
    """
    path = workspace.model_path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model; run `wsss train` first")
    return file_hash(path)  # the same hash load_checkpoint reports, so lineages agree


def checked_model_hash(workspace: Workspace) -> str:
    """The current checkpoint's hash, once it is known to load, to fit the manifest's
    classes and to come from a finished training run.

    Flows call it once before mapping the shards, so a missing, mismatched or
    unfinished model is one clear error instead of the same failure in every shard.
    """
    classes = read_manifest(workspace).class_names
    checkpoint = load_checkpoint(workspace.model_path, "cpu", class_names=classes)
    require_complete(checkpoint, workspace.model_path)
    return checkpoint.file_hash


def expected_lineage(
    config: PipelineConfig, stage: str, model: str, records: Sequence[ImageRecord]
) -> Lineage:
    return Lineage(stage_config_hash(config, stage), model, records_hash(records))


def is_fresh(path: Path, lineage: Lineage) -> bool:
    """True when ``path`` exists and was written with exactly ``lineage``."""
    return read_lineage(path) == lineage


def output_is_current(stage: str, path: Path, lineage: Lineage) -> bool:
    """True when a run of ``stage`` would keep ``path`` as it is (status and stages agree)."""
    if not is_fresh(path, lineage):
        return False
    # CAM shards from before the class_scores column are recomputed once to gain it.
    return stage != "cam" or cam_shard_has_class_scores(path)


def map_stages(config: PipelineConfig) -> tuple[str, ...]:
    """The map stages ``config`` computes, in pipeline order (affinity only when on)."""
    return tuple(s for s in ALL_MAP_STAGES if s != "affinity" or config.affinity.enabled)


def shard_maps_current(
    workspace: Workspace,
    config: PipelineConfig,
    model: str,
    shard_index: int,
    records: Sequence[ImageRecord],
) -> bool:
    """True when every map stage of a shard is what a run would keep (this config and model).

    What evaluation and reports read, so a figure never mixes old and new maps.
    """
    return all(
        output_is_current(
            stage,
            workspace.shard_path(stage, shard_index),
            expected_lineage(config, stage, model, records),
        )
        for stage in map_stages(config)
    )


def shard_records(
    workspace: Workspace, config: PipelineConfig, shard_index: int
) -> tuple[Manifest, tuple[ImageRecord, ...]]:
    manifest = read_manifest(workspace)
    shards = manifest.shards(config.shard_size)
    if not 0 <= shard_index < len(shards):
        raise IndexError(f"shard {shard_index} out of range (manifest has {len(shards)})")
    return manifest, shards[shard_index]


def shard_count(workspace: Workspace, config: PipelineConfig) -> int:
    return len(read_manifest(workspace).shards(config.shard_size))


HeadPath = Callable[[Workspace, PipelineConfig, str], Path]  # (workspace, config, classifier hash)
AFFINITY_HEAD, SELF_TRAINING_HEAD = "affinity head", "self-training head"  # titles, in lines too


def config_heads(config: PipelineConfig) -> dict[str, HeadPath]:
    """The heads ``config`` trains after the classifier, by title, in stage order."""
    heads: dict[str, HeadPath] = {}
    if config.affinity.enabled:
        heads[AFFINITY_HEAD] = affinity_head.head_path
    if config.self_training.enabled:
        heads[SELF_TRAINING_HEAD] = segmentation_head.head_path
    return heads
