"""Stage ``cam``: class activation maps of each image's labelled classes.

Each image's row also carries the classifier's sigmoid score of *every* class
(one gradient-free forward pass at the network input size per batch), which
review uses to flag labels that look wrong or missing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsss_core.cam import class_activation_maps
from wsss_core.config import CamConfig, PipelineConfig
from wsss_core.data.manifest import ImageRecord
from wsss_core.model.checkpoint import LoadedClassifier, load_checkpoint
from wsss_core.model.device import cpu_threads
from wsss_core.model.transforms import to_tensor
from wsss_core.stages.common import (
    RewritePlan,
    ShardOutcome,
    expected_lineage,
    output_is_current,
    plan_rewrite,
    shard_records,
)
from wsss_core.stages.image_failures import ImageGuard, failures_metadata, read_image
from wsss_core.stochastic_cam import StochasticSelection, image_seed
from wsss_core.store.maps import CamRecord, write_cam_shard
from wsss_core.store.workspace import Workspace


def _network_size(height: int, width: int, target_side: int) -> tuple[int, int]:
    """Resize so the longer side matches the training size, keeping the aspect ratio."""
    scale = target_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _to_original_size(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Maps at the image's own size, each re-normalised to a maximum of 1."""
    if maps.shape[0] == 0:
        return np.zeros((0, height, width), np.float32)
    if maps.shape[1:] == (height, width):
        return maps
    resized = F.interpolate(
        torch.from_numpy(maps)[None], size=(height, width), mode="bilinear", align_corners=False
    )[0].clamp_(min=0)
    peak = resized.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
    return (resized / peak).numpy()


def class_scores(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """Sigmoid scores ``[B, C]`` of every class, in eval mode and without autograd."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.sigmoid(model(images).float()).cpu().numpy()
    finally:
        model.train(was_training)


def stochastic_selection(settings: CamConfig) -> StochasticSelection | None:
    """The cam section's stochastic inference, or None when it is off."""
    if not settings.stochastic_passes:
        return None
    return StochasticSelection(
        settings.stochastic_passes,
        settings.stochastic_keep,
        settings.stochastic_window,
        settings.stochastic_aggregate,
    )


def compute_cams(
    classifier: LoadedClassifier,
    records: Sequence[ImageRecord],
    config: PipelineConfig,
    device: torch.device,
    show_progress: bool = False,
    label: str = "cam",
    guard: ImageGuard | None = None,
) -> list[CamRecord]:
    """CAMs (and all class scores) for ``records`` in input order.

    Images of equal network size share batches. ``guard``: records the images
    whose file cannot be read and leaves them out (without one, they raise).
    """
    stochastic = stochastic_selection(config.cam)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[_network_size(record.height, record.width, classifier.image_size)].append(index)
    results: dict[int, CamRecord] = {}
    bar = tqdm(total=len(records), desc=label, unit="img", disable=not show_progress)
    for size, indices in groups.items():
        for start in range(0, len(indices), config.cam.batch_size):
            wanted = indices[start : start + config.cam.batch_size]
            pixels = {index: _read(records[index], guard) for index in wanted}
            batch = [index for index in wanted if pixels[index] is not None]
            bar.update(len(wanted) - len(batch))
            if not batch:
                continue
            tensors = [
                F.interpolate(
                    to_tensor(pixels[index])[None],
                    size=size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )[0]
                for index in batch
            ]
            images = torch.stack(tensors).to(device)
            scores = class_scores(classifier.model, images)
            maps = class_activation_maps(
                classifier.model,
                images,
                [list(records[index].labels) for index in batch],
                method=config.cam.method,
                scales=config.cam.scales,
                flip=config.cam.flip,
                stochastic=stochastic,
                seeds=[image_seed(config.cam.stochastic_seed, records[i].image_id) for i in batch],
            )
            for index, image_maps, image_scores in zip(batch, maps, scores, strict=True):
                record = records[index]
                full = _to_original_size(image_maps, record.height, record.width)
                results[index] = CamRecord(
                    record.image_id, record.labels, full, tuple(image_scores.tolist())
                )
            bar.update(len(batch))
    bar.close()
    return [results[index] for index in range(len(records)) if index in results]


def _read(record: ImageRecord, guard: ImageGuard | None) -> np.ndarray | None:
    return read_image(record) if guard is None else guard.run(record, read_image, record)


def run_cam_shard(
    workspace: Workspace,
    config: PipelineConfig,
    shard_index: int,
    show_progress: bool = False,
    model_hash: str | None = None,
) -> ShardOutcome:
    """Write ``maps/cam/part-<shard>.parquet`` unless an up-to-date one exists.

    ``model_hash``: the checkpoint's hash when the caller has it, so an
    up-to-date shard is skipped without loading the model.
    """
    started = time.perf_counter()
    manifest, records = shard_records(workspace, config, shard_index)
    path = workspace.shard_path("cam", shard_index)

    def up_to_date(model: str) -> bool:
        lineage = expected_lineage(config, "cam", model, records)
        return output_is_current("cam", path, lineage)

    def plan_for(model: str) -> RewritePlan:
        return plan_rewrite(
            path, expected_lineage(config, "cam", model, records), records, "cam", shard_index
        )

    if model_hash is not None:
        plan = plan_for(model_hash)
        if not plan.todo and up_to_date(model_hash):
            return ShardOutcome("cam", shard_index, len(records), False, failed=plan.known_failed)
    classifier = load_checkpoint(
        workspace.model_path, config.device, class_names=manifest.class_names
    )
    plan = plan_for(classifier.file_hash)
    if not plan.todo and up_to_date(classifier.file_hash):
        return ShardOutcome("cam", shard_index, len(records), False, failed=plan.known_failed)
    lineage = expected_lineage(config, "cam", classifier.file_hash, records)
    device = next(classifier.model.parameters()).device
    guard = ImageGuard("cam", shard_index)
    with cpu_threads(config.cam.cpu_threads):
        cams = compute_cams(
            classifier, plan.todo, config, device, show_progress, f"cam {shard_index}", guard
        )
    failed = plan.known_failed + tuple(guard.failures)
    write_cam_shard(
        path,
        cams,
        lineage,
        config.cam.store_stride,
        plan.inputs,
        plan.reused(),
        failed=failures_metadata(failed),
    )
    seconds = time.perf_counter() - started
    return ShardOutcome("cam", shard_index, len(records), True, seconds, len(cams), failed)
