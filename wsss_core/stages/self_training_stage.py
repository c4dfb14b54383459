"""Before the crf stage, with self-training on: the segmentation head, trained once.

Its labels are the crf stage's own first-pass masks
(:func:`~wsss_core.stages.first_pass.first_pass_mask`) of ``train_images``
images spread over the manifest, computed here from their cam, grown and
affinity maps (the head needs all of its training masks before any final
mask can be made). They are kept beside the head, and the crf stage takes
those images' first passes from there instead of computing them again. Only
shards whose upstream maps are current for this config and classifier are
read, so a shard that failed upstream in this run never lends its older maps.
An image without those maps, or one that fails here (an unreadable file), is
left out of training with a line saying so, as the crf stage would skip or
record it; the errors that are the shard's (``image_failures``) still raise.
The head is saved under ``models/segmentation/<lineage>.pt``
(``wsss_core/model/segmentation_head.py``), after its first passes
(``<lineage>.first-passes.parquet``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import ImageRecord, read_manifest
from wsss_core.model import segmentation_head as heads
from wsss_core.model.affinity_head import training_records
from wsss_core.model.checkpoint import load_checkpoint
from wsss_core.model.device import cpu_threads
from wsss_core.stages.common import expected_lineage, is_fresh
from wsss_core.stages.first_pass import (
    FirstPass,
    first_pass_mask,
    first_passes_path,
    inputs_digest,
    write_first_passes,
)
from wsss_core.stages.image_failures import ImageGuard, read_image
from wsss_core.stages.label_stage import rows_by_id
from wsss_core.store.maps import CamRecord, LabelRecord, read_cam_shard, read_label_shard
from wsss_core.store.workspace import Workspace


def ensure_segmentation_head(
    workspace: Workspace,
    config: PipelineConfig,
    model_hash: str,
    progress: Callable[[str], None] | None = None,
) -> tuple[bool, float]:
    """Train the head unless this classifier's one for ``config`` exists (or the option is off).

    Returns (trained now, seconds: first passes, features and training).
    """
    settings = config.self_training
    if not settings.enabled:
        return False, 0.0
    lineage = heads.head_lineage(config, model_hash)
    path = workspace.segmentation_head_path(lineage)
    if path.exists():
        heads.load_segmentation_head(path)  # a damaged file is a clear error, not a retrain
        return False, 0.0
    started = time.perf_counter()
    say = progress or (lambda _: None)
    manifest = read_manifest(workspace)
    num_labels = len(manifest.class_names) + 1
    wanted = {r.image_id for r in training_records(manifest.records, settings.train_images)}
    backbone = load_checkpoint(workspace.model_path, "cpu", manifest.class_names).model.features
    upstream = ("cam", "grown", *(("affinity",) if config.affinity.enabled else ()))
    examples, first_passes = [], []
    with cpu_threads(settings.training_threads):
        for index, records in enumerate(manifest.shards(config.shard_size)):
            picked = [record for record in records if record.image_id in wanted]
            current = all(
                is_fresh(
                    workspace.shard_path(stage, index),
                    expected_lineage(config, stage, model_hash, records),
                )
                for stage in upstream
            )
            if not picked or not current:
                continue  # nothing to learn from here, or maps this run could not make
            cams = rows_by_id(read_cam_shard(workspace.shard_path("cam", index)), picked)
            grown = rows_by_id(read_label_shard(workspace.shard_path("grown", index)), picked)
            walked = (
                rows_by_id(read_cam_shard(workspace.shard_path("affinity", index)), picked)
                if config.affinity.enabled
                else None
            )
            guard = ImageGuard("self-training head", index)
            for record in picked:
                image_id = record.image_id
                if (
                    image_id not in cams
                    or image_id not in grown
                    or (walked is not None and image_id not in walked)
                ):
                    say(
                        f"self-training head: {image_id} has no maps (it failed upstream); left out"
                    )
                    continue
                walk = None if walked is None else walked[image_id]
                inputs = (record, cams[image_id], grown[image_id], walk)
                made = guard.run(record, _example, *inputs, backbone, config, num_labels)
                if made is not None:
                    example, first = made
                    examples.append(example)
                    # A restored class may come from the walk, whose head the digest
                    # does not name: such a first pass is computed again by the stage.
                    if not first.recovered or walk is None:
                        digest = inputs_digest(record, cams[image_id], grown[image_id].labels)
                        first_passes.append((image_id, digest, first))
            for failure in guard.failures:
                say(f"self-training head: {failure}; left out")
        say(f"self-training head: first-pass masks and features of {len(examples)} images")
        head, _ = heads.train_segmentation_head(examples, num_labels, settings, say)
    seconds = time.perf_counter() - started
    write_first_passes(first_passes_path(path), lineage, first_passes)
    heads.save_segmentation_head(path, head, lineage, len(examples), seconds)
    return True, seconds


def _example(
    record: ImageRecord,
    cams: CamRecord,
    grown: LabelRecord,
    walked: CamRecord | None,
    backbone: torch.nn.Module,
    config: PipelineConfig,
    num_labels: int,
) -> tuple[heads.TrainingExample, FirstPass]:
    """One image's features and first-pass mask, as the crf stage makes that mask."""
    image = read_image(record)
    walk = None if walked is None else (lambda: walked.cams)
    first = first_pass_mask(image, cams, grown.labels, walk, config.crf)
    settings = config.self_training
    example = heads.training_example(
        backbone,
        image,
        first.labels,
        cams.class_ids,
        num_labels,
        settings.input_side,
        settings.max_upscale,
    )
    return example, first
