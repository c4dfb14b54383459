"""Stage ``cam``: class activation maps of each image's labelled classes.

Each image's row also carries the classifier's sigmoid score of *every* class
(one gradient-free forward pass at the network input size per batch), which
review uses to flag labels that look wrong or missing.

With cross-image affinity on (``cam.cross_image_weight``), each image's
features attend to its partners in its group of the shard (by manifest order,
never by batch; :mod:`wsss_core.stages.cross_image_groups`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsss_core.cam import class_activation_maps
from wsss_core.config import CamConfig, PipelineConfig
from wsss_core.cross_image import CrossImageAffinity, Partners
from wsss_core.data.manifest import ImageRecord
from wsss_core.model.checkpoint import LoadedClassifier, load_checkpoint
from wsss_core.model.device import cpu_threads
from wsss_core.model.transforms import to_tensor
from wsss_core.stages.common import (
    RewritePlan,
    ShardOutcome,
    expected_lineage,
    plan_rewrite,
    shard_records,
)
from wsss_core.stages.cross_image_groups import CrossImageGroups
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


def cross_image_affinity(settings: CamConfig) -> CrossImageAffinity | None:
    """The cam section's cross-image affinity, or None when it is off."""
    if not settings.cross_image_weight:
        return None
    return CrossImageAffinity(settings.cross_image_weight, settings.cross_image_temperature)


def _network_tensor(pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(
        to_tensor(pixels)[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]


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
    With cross-image affinity, each image's partners come from its group of
    ``cam.cross_image_group`` records in input order; the batches stay those of
    the option off, so an image without partners keeps its maps bit for bit.
    """
    stochastic = stochastic_selection(config.cam)
    cross_image = cross_image_affinity(config.cam)
    side = classifier.image_size

    def network_tensor(record: ImageRecord, pixels: np.ndarray) -> torch.Tensor:
        return _network_tensor(pixels, _network_size(record.height, record.width, side))

    groups = (
        CrossImageGroups(
            classifier,
            records,
            config.cam.cross_image_group,
            lambda record: _read(record, guard),
            network_tensor,
            device,
        )
        if cross_image
        else None
    )
    sizes: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        sizes[_network_size(record.height, record.width, side)].append(index)
    results: dict[int, CamRecord] = {}
    bar = tqdm(total=len(records), desc=label, unit="img", disable=not show_progress)
    for size, indices in sizes.items():
        for start in range(0, len(indices), config.cam.batch_size):
            wanted = indices[start : start + config.cam.batch_size]
            pixels = {
                index: groups.pixels(index) if groups else _read(records[index], guard)
                for index in wanted
            }
            batch = [index for index in wanted if pixels[index] is not None]
            bar.update(len(wanted) - len(batch))
            if batch:
                images = torch.stack([_network_tensor(pixels[i], size) for i in batch]).to(device)
                partners = [groups.partners(i) for i in batch] if groups else None
                for index, cam_record in _batch_cams(
                    classifier, records, batch, images, config, stochastic, cross_image, partners
                ):
                    results[index] = cam_record
                bar.update(len(batch))
            if groups:
                groups.release(wanted)
    bar.close()
    return [results[index] for index in range(len(records)) if index in results]


def _batch_cams(
    classifier: LoadedClassifier,
    records: Sequence[ImageRecord],
    batch: list[int],
    images: torch.Tensor,
    config: PipelineConfig,
    stochastic: StochasticSelection | None,
    cross_image: CrossImageAffinity | None,
    partners: list[Partners] | None,
) -> list[tuple[int, CamRecord]]:
    """The CAM records of one batch of equal-size images (``batch``: their indices)."""
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
        cross_image=cross_image,
        partners=partners,
    )
    out = []
    for index, image_maps, image_scores in zip(batch, maps, scores, strict=True):
        record = records[index]
        full = _to_original_size(image_maps, record.height, record.width)
        out.append(
            (index, CamRecord(record.image_id, record.labels, full, tuple(image_scores.tolist())))
        )
    return out


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

    def plan_for(model: str) -> RewritePlan:
        lineage = expected_lineage(config, "cam", model, records)
        return plan_rewrite(path, lineage, records, "cam", shard_index)

    def skipped(plan: RewritePlan) -> ShardOutcome:
        return ShardOutcome("cam", shard_index, len(records), False, failed=plan.known_failed)

    if model_hash is not None:
        plan = plan_for(model_hash)
        if plan.unchanged():
            return skipped(plan)
    classifier = load_checkpoint(
        workspace.model_path, config.device, class_names=manifest.class_names
    )
    if classifier.file_hash != model_hash:
        plan = plan_for(classifier.file_hash)
        if plan.unchanged():
            return skipped(plan)
    if config.cam.cross_image_weight and (plan.kept_ids or plan.known_failed):
        # An image's maps depend on its group mates: a changed shard is computed whole.
        plan = replace(plan, kept_ids=(), todo=list(records), known_failed=())
    lineage = plan.lineage
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
