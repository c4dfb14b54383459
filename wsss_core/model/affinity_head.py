"""The affinity stage's boundary head: its training set, training, and checkpoint file.

Trained once per *lineage*: the classifier checkpoint's hash, the train and
cam sections (the CAMs it learns from) and the affinity section's training
settings (not the walk's: changing ``beta`` walks again with the same head).
The file lives at
``models/affinity/<lineage>.pt``, so a run that finds it skips training, a
changed setting or a retrained classifier trains a new one, and configs
compared side by side never overwrite each other's head. Like the classifier
in pipeline runs, a head is not retrained because images were added: new
images are walked with it.

Training data (no ground truth is read), after IRN's ``cam_to_ir_label``:
``train_images`` labelled images spread evenly over the manifest. Each image
and its CAMs are brought to the affinity input size, or kept at their own
where that is smaller (:func:`_label_size`); confident foreground is
where the top CAM is ``>= fg_threshold``, confident background where every
CAM is ``< bg_threshold``, each refined by a dense CRF on the image so it
follows the image's edges, the rest unknown. Cells of the walk grid take a
label when 80% of their pixels agree on it. The frozen backbone's feature
pyramid of every training image is computed once and kept (float16). Each
batch is scored on a fresh seeded sample of the pair offsets
(``train_pair_share``; :func:`~wsss_core.affinity.sampled_offsets`).
Training is seeded and runs in one process, so it gives the same head
whichever runner computes the maps.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss_core.affinity import (
    BoundaryHead,
    affinity_loss,
    feature_pyramid,
    grid_size,
    path_affinities,
    resize_to_grid,
    sampled_offsets,
)
from wsss_core.config import AffinityConfig, PipelineConfig, stage_config_hash
from wsss_core.crf import CrfParams, ImageCrf
from wsss_core.data.images import load_rgb
from wsss_core.data.manifest import ImageRecord
from wsss_core.model.transforms import to_tensor
from wsss_core.model.trunk_heads import (
    epoch_batches,
    grid_groups,
    read_head_file,
    save_head_file,
    stacked_levels,
    trained_layout,
    training_layout,
)
from wsss_core.probability import UNKNOWN
from wsss_core.store.maps import CamRecord
from wsss_core.store.workspace import Workspace

HEAD_FORMAT = "wsss-affinity-head/1"
CELL_AGREEMENT = 0.8  # share of a cell's pixels that must carry a label for the cell to
LABEL_CONFIDENCE = 0.7  # unary of the label-refining CRF (IRN's gt_prob)
# IRN's label-refining CRF: a tight colour kernel, so labels follow the image's edges.
LABEL_CRF = CrfParams(bilateral_sxy=50.0, bilateral_srgb=5.0, bilateral_compat=10.0)

Progress = Callable[[str], None]


# Settings of the walk, not of the head: changing them walks again with the same head.
WALK_KEYS = {"radius", "beta", "steps", "cpu_threads", "enabled"}


def head_lineage(config: PipelineConfig, classifier_hash: str) -> str:
    """What a head is trained from: the classifier, the CAMs and the training settings."""
    training = config.affinity.model_dump(mode="json", exclude=WALK_KEYS)
    training_text = json.dumps(training, sort_keys=True)
    text = f"{classifier_hash}|{stage_config_hash(config, 'cam')}|{training_text}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LoadedHead:
    head: BoundaryHead
    lineage: str
    images: int  # training images
    seconds: float  # training time, features included


@dataclass(frozen=True)
class NetworkInput:
    """An image resized for the backbone, and its walk grid."""

    tensor: torch.Tensor  # [1, 3, h, w], normalised
    grid: tuple[int, int]


def network_input(
    image: np.ndarray, input_side: int, max_upscale: float | None = None
) -> NetworkInput:
    """The image with its longer side at ``input_side`` (aspect kept), normalised.

    ``max_upscale``: enlarge the image at most this much (a smaller input side).
    """
    height, width = image.shape[:2]
    scale = input_side / max(height, width)
    if max_upscale is not None:
        scale = min(scale, max_upscale)
    size = max(1, round(height * scale)), max(1, round(width * scale))
    tensor = F.interpolate(
        to_tensor(image)[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )
    return NetworkInput(tensor, grid_size(*size))


def _refined(crf: ImageCrf, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """A hard label map refined by the image's dense CRF (labels as a soft unary)."""
    probs = np.full((n_labels, *labels.shape), (1 - LABEL_CONFIDENCE) / max(n_labels - 1, 1))
    np.put_along_axis(probs, labels[None].astype(np.int64), LABEL_CONFIDENCE, axis=0)
    refined = crf.refine(probs.astype(np.float32), list(range(n_labels - 1)))
    return refined.labels.astype(np.int64)  # label values here are channel indices


def confident_cells(
    image: np.ndarray, cams: np.ndarray, grid: tuple[int, int], settings: AffinityConfig
) -> np.ndarray:
    """Training labels on the grid: CAM channel + 1, 0 background, 255 unknown.

    ``image`` and ``cams`` at the same (affinity input) size.
    """
    k, height, width = cams.shape
    if k == 0:
        return np.zeros(grid, np.uint8)
    foreground = np.concatenate([np.full((1, height, width), settings.fg_threshold), cams])
    background = np.concatenate([np.full((1, height, width), settings.bg_threshold), cams])
    crf = ImageCrf(image, LABEL_CRF)  # both refinements on one set of kernels
    sure_fg = _refined(crf, foreground.argmax(axis=0), k + 1)
    sure_bg = _refined(crf, background.argmax(axis=0), k + 1) == 0
    labels = np.full((height, width), UNKNOWN, np.uint8)
    labels[sure_fg > 0] = sure_fg[sure_fg > 0]
    labels[(sure_fg == 0) & sure_bg] = 0
    return _cell_labels(labels, grid, k)


def _cell_labels(labels: np.ndarray, grid: tuple[int, int], k: int) -> np.ndarray:
    height, width = labels.shape
    rows = np.arange(height) * grid[0] // height
    cols = np.arange(width) * grid[1] // width
    cell = (rows[:, None] * grid[1] + cols[None, :]).ravel()
    total = np.bincount(cell, minlength=grid[0] * grid[1])
    out = np.full(grid[0] * grid[1], UNKNOWN, np.uint8)
    flat = labels.ravel()
    for value in range(k + 1):
        count = np.bincount(cell[flat == value], minlength=grid[0] * grid[1])
        out[(count >= CELL_AGREEMENT * total) & (total > 0)] = value  # no pixel: unknown
    return out.reshape(grid)


def training_records(records: Sequence[ImageRecord], count: int) -> list[ImageRecord]:
    """``count`` labelled records spread evenly over ``records`` (all when fewer)."""
    labelled = [r for r in records if r.labels]
    if len(labelled) <= count:
        return labelled
    picks = np.linspace(0, len(labelled) - 1, count).round().astype(int)
    return [labelled[i] for i in picks]


@dataclass
class _Example:
    levels: list[torch.Tensor]  # float16 feature pyramid
    labels: torch.Tensor  # int64 [h, w]


def _example(
    backbone: torch.nn.Module, record: ImageRecord, cams: CamRecord, settings: AffinityConfig
) -> _Example:
    image = load_rgb(record.uri)
    net = network_input(image, settings.input_side)
    size = _label_size(image.shape[:2], tuple(net.tensor.shape[-2:]))
    small = (
        F.interpolate(
            torch.from_numpy(image).permute(2, 0, 1)[None].float(),
            size=size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0]
        .permute(1, 2, 0)
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
        .numpy()
    )
    small_cams = resize_to_grid(torch.from_numpy(cams.cams)[None], size)[0].numpy()
    with torch.no_grad():
        levels = [level.half() for level in feature_pyramid(backbone, net.tensor)]
    labels = confident_cells(small, small_cams, net.grid, settings)
    return _Example(levels, torch.from_numpy(labels.astype(np.int64)))


def _label_size(image: tuple[int, ...], network: tuple[int, ...]) -> tuple[int, int]:
    """Where the label CRF runs: the network input's size, but never above the image's own.

    An upsampled image adds no edges for the CRF to follow, only pixels: on the
    128-px digits the 256-px input made the label CRFs a third of the head's
    training time. (The labels differ a little: ARCHITECTURE.md, "Final masks
    and the affinity stage", has what that changed.)
    """
    grid = grid_size(int(network[0]), int(network[1]))
    if network[0] * network[1] <= image[0] * image[1] or image[0] < grid[0] or image[1] < grid[1]:
        return int(network[0]), int(network[1])  # every grid cell keeps a pixel of its own
    return int(image[0]), int(image[1])


def train_head(
    backbone: torch.nn.Module,
    examples_from: Sequence[tuple[ImageRecord, CamRecord]],
    settings: AffinityConfig,
    progress: Progress | None = None,
) -> tuple[BoundaryHead, float]:
    """Train a boundary head on the frozen ``backbone``; returns it (eval mode) and seconds."""
    started = time.perf_counter()
    say = progress or (lambda _: None)
    torch.manual_seed(settings.seed)
    examples = [_example(backbone, record, cams, settings) for record, cams in examples_from]
    if not examples:
        raise ValueError("no labelled image to train the affinity head on")
    say(f"affinity head: features and labels of {len(examples)} images")
    head = training_layout(BoundaryHead([level.shape[1] for level in examples[0].levels]))
    optimiser = torch.optim.Adam(head.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    groups = grid_groups([tuple(example.labels.shape) for example in examples])
    rng = np.random.default_rng(settings.seed)
    pair_rng = np.random.default_rng([settings.seed, 1])  # its own stream: batches stay the same
    for epoch in range(settings.epochs):
        batches = epoch_batches(groups, settings.batch_size, rng)
        total = 0.0
        for grid, members in batches:
            levels = stacked_levels([examples[i].levels for i in members])
            labels = torch.stack([examples[i].labels for i in members])
            boundary = head(levels, (grid[0], grid[1]))
            radius = settings.train_radius
            offsets = sampled_offsets(radius, settings.train_pair_share, pair_rng)
            loss = affinity_loss(
                path_affinities(boundary, radius, offsets), labels, radius, offsets
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item()
        say(f"affinity head: epoch {epoch + 1}/{settings.epochs} loss {total / len(batches):.4f}")
    return trained_layout(head), time.perf_counter() - started


def save_head(path: Path, head: BoundaryHead, lineage: str, images: int, seconds: float) -> None:
    shape = {"level_channels": list(head.level_channels), "width": head.width}
    save_head_file(path, HEAD_FORMAT, head, shape, lineage=lineage, images=images, seconds=seconds)


def load_head(path: Path) -> LoadedHead:
    """A head written by :func:`save_head`, in eval mode; a clear error for anything else."""
    payload = read_head_file(path, HEAD_FORMAT, "affinity head")
    head = BoundaryHead(payload["level_channels"], payload["width"])
    head.load_state_dict(payload["state_dict"])
    return LoadedHead(head.eval(), payload["lineage"], payload["images"], payload["seconds"])


def head_path(workspace: Workspace, config: PipelineConfig, classifier_hash: str) -> Path:
    return workspace.affinity_head_path(head_lineage(config, classifier_hash))
