"""Stage ``affinity``: each image's CAMs walked over learned class boundaries.

Runs only with ``affinity.enabled``. Before its shards, the flow calls
:func:`ensure_head` once: the boundary head for this classifier and these
settings is trained from the CAM shards (``wsss_core/model/affinity_head.py``)
unless its file exists. Each shard then writes ``maps/affinity/part-NNNNN``,
a CAM table (same schema, ``read_cam_shard``) of the walked maps, each class
divided by its own maximum (``wsss_core/affinity.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch

from wsss_core.affinity import WalkSettings, feature_pyramid, walk_cams
from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import ImageRecord, read_manifest
from wsss_core.model.affinity_head import (
    head_lineage,
    head_path,
    load_head,
    network_input,
    save_head,
    train_head,
    training_records,
)
from wsss_core.model.checkpoint import load_checkpoint
from wsss_core.model.device import cpu_threads
from wsss_core.stages.common import (
    ShardOutcome,
    expected_lineage,
    plan_rewrite,
    shard_records,
)
from wsss_core.stages.image_failures import ImageGuard, failures_metadata, read_image
from wsss_core.store.maps import CamRecord, read_cam_shard, stored_image_ids, write_cam_shard
from wsss_core.store.workspace import Workspace


def walk_settings(config: PipelineConfig) -> WalkSettings:
    a = config.affinity
    return WalkSettings(radius=a.radius, beta=a.beta, steps=a.steps)


def ensure_head(
    workspace: Workspace,
    config: PipelineConfig,
    model_hash: str,
    progress: Callable[[str], None] | None = None,
) -> tuple[bool, float]:
    """Train the boundary head unless this classifier's one for ``config`` exists.

    Returns (trained now, seconds). Needs every shard's CAMs of the training images.
    """
    path = workspace.affinity_head_path(head_lineage(config, model_hash))
    if path.exists():
        load_head(path)  # a damaged file is a clear error, not a silent retrain
        return False, 0.0
    manifest = read_manifest(workspace)
    picked = training_records(manifest.records, config.affinity.train_images)
    wanted = {record.image_id: record for record in picked}

    def pairs() -> Iterator[tuple[ImageRecord, CamRecord]]:
        """Streamed, so only the training features are held, never every CAM."""
        for shard_index in range(len(manifest.shards(config.shard_size))):
            for cams in read_cam_shard(workspace.shard_path("cam", shard_index)):
                if cams.image_id in wanted:
                    yield wanted[cams.image_id], cams

    classifier = load_checkpoint(workspace.model_path, "cpu", class_names=manifest.class_names)
    head, seconds = train_head(classifier.model.features, pairs(), config.affinity, progress)
    save_head(path, head, head_lineage(config, model_hash), len(wanted), seconds)
    return True, seconds


def run_affinity_shard(
    workspace: Workspace,
    config: PipelineConfig,
    shard_index: int,
    show_progress: bool = False,
    model_hash: str | None = None,
) -> ShardOutcome:
    """Write ``maps/affinity/part-<shard>.parquet`` unless an up-to-date one exists."""
    started = time.perf_counter()
    manifest, records = shard_records(workspace, config, shard_index)
    classifier = None
    if model_hash is None:
        classifier = load_checkpoint(workspace.model_path, "cpu", manifest.class_names)
        model_hash = classifier.file_hash
    path = workspace.shard_path("affinity", shard_index)
    lineage = expected_lineage(config, "affinity", model_hash, records)
    cam_path = workspace.shard_path("cam", shard_index)
    plan = plan_rewrite(path, lineage, records, "affinity", shard_index, stored_image_ids(cam_path))
    if plan.unchanged():
        return ShardOutcome("affinity", shard_index, len(records), False, failed=plan.known_failed)
    classifier = classifier or load_checkpoint(workspace.model_path, "cpu", manifest.class_names)
    head = load_head(head_path(workspace, config, model_hash)).head
    wanted = {record.image_id: record for record in plan.todo}
    settings = walk_settings(config)
    guard = ImageGuard("affinity", shard_index)

    def walk(record: ImageRecord, cams: CamRecord) -> CamRecord:
        net = network_input(read_image(record), config.affinity.input_side)
        boundary = head(feature_pyramid(classifier.model.features, net.tensor), net.grid)
        maps = walk_cams(cams.cams, boundary[0].numpy(), settings, net.grid)
        return CamRecord(cams.image_id, cams.class_ids, maps, None)

    walked = []
    with cpu_threads(config.affinity.cpu_threads), torch.no_grad():
        for cams in read_cam_shard(cam_path):
            record = wanted.get(cams.image_id)
            if record is not None and (result := guard.run(record, walk, record, cams)):
                walked.append(result)
    failed = plan.known_failed + tuple(guard.failures)
    write_cam_shard(
        path,
        walked,
        lineage,
        config.cam.store_stride,
        plan.inputs,
        plan.reused(),
        stage="affinity",
        failed=failures_metadata(failed),
    )
    seconds = time.perf_counter() - started
    return ShardOutcome("affinity", shard_index, len(records), True, seconds, len(walked), failed)
