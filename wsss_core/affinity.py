"""Learned class boundaries and a random walk over them (AffinityNet / IRN).

A CAM fires on the few parts of an object that tell its class apart. Ahn &
Kwak (AffinityNet, CVPR 2018) and Ahn et al. (IRN, CVPR 2019) spread it over
the whole object: a small network learns whether two nearby pixels belong
together, and a random walk on that affinity carries each class's CAM to the
pixels its object covers, stopping where another region begins.

We follow IRN's form, which measured better here than AffinityNet's
embedding distances (the embedding's affinities of pixels of different regions
overlapped those of one region far more):

* **Features.** The classifier's backbone, frozen: the last block output at
  each resolution from stride 4 down (:func:`feature_pyramid`).
* **Boundaries.** :class:`BoundaryHead` maps every level to a few channels,
  resizes them to the walk's grid (stride 4 of the network input) and mixes
  them into one boundary probability per cell.
* **Affinity.** Two cells within ``radius`` are as related as the straight path
  between them is free of boundary: ``1 - max`` of the boundary map along it
  (:func:`path_affinities`). So a closed outline separates an object from
  everything outside it, whatever the distance.
* **Supervision.** Pairs of confident cells (``affinity_training``): same
  label should have affinity 1, different labels 0 (:func:`affinity_loss`,
  balanced as the papers do). Where the boundary lies between them is not
  told: the head learns to put it on the image evidence that separates them
  across many images. No ground truth is read.
* **Walk.** Affinities raised to ``beta`` plus a self-loop, row-normalised: a
  transition matrix ``T`` (:func:`transition_matrix`); ``T^t`` replaces each
  cell's scores by a weighted mean over the cells a walk from it reaches in
  ``t`` steps: within one object that is most of it, across an outline almost
  nothing (:func:`random_walk`). A sparse matrix applied ``t`` times, not the
  reference code's dense ``T^(2^k)`` by squaring (quadratic memory: ~40 s and
  0.5 GB per image at stride 4 on CPU). The walked maps are then divided by
  their own maximum (IRN), so an object whose CAM covers one part of it comes
  out near 1 all over (:func:`walk_cams`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn

from wsss_core.probability import UNKNOWN

__all__ = [
    "BoundaryHead",
    "WalkSettings",
    "affinity_loss",
    "feature_pyramid",
    "grid_size",
    "level_branches",
    "levels_on_grid",
    "neighbour_offsets",
    "path_affinities",
    "random_walk",
    "resize_to_grid",
    "sampled_offsets",
    "transition_matrix",
    "walk_cams",
]

# Levels of the backbone the head reads: strides 4 and up (stride 2 is mostly colour).
MIN_LEVEL_STRIDE = 4
GRID_STRIDE = 4  # one walk cell per 4 x 4 pixels of the network input (IRN's)
LOG_FLOOR = 1e-5  # keeps -log finite for affinities of exactly 0 or 1


def grid_size(height: int, width: int, stride: int = GRID_STRIDE) -> tuple[int, int]:
    """The walk grid for a network input of ``height x width``: a cell per ``stride`` pixels."""
    return max(1, -(-height // stride)), max(1, -(-width // stride))


def feature_pyramid(features: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The last output of ``features``' children at each stride >= 4, finest first.

    ``features`` is a classifier's convolutional trunk (an ``nn.Sequential`` of
    blocks, as :class:`~wsss_core.model.classifier.CamClassifier` has); its
    blocks run one after another, so no hook is left behind.
    """
    height = images.shape[-2]
    levels: dict[int, torch.Tensor] = {}
    x = images
    for block in features.children():
        x = block(x)
        stride = max(1, round(height / x.shape[-2]))
        if stride >= MIN_LEVEL_STRIDE:
            levels[stride] = x  # a later block at the same stride replaces an earlier one
    if not levels:
        raise ValueError("the backbone has no block at stride 4 or coarser")
    return [levels[stride] for stride in sorted(levels)]


def resize_to_grid(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, C, h, w]`` resized to ``size``: area mean when shrinking, bilinear when growing."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if maps.shape[-2] >= size[0] and maps.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(maps, size)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def level_branches(level_channels: Sequence[int], width: int) -> nn.ModuleList:
    """Per pyramid level: 1x1 convolution to ``width`` channels, group norm (4), ReLU."""
    return nn.ModuleList(
        nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=False),
            nn.GroupNorm(4, width),
            nn.ReLU(inplace=True),
        )
        for channels in level_channels
    )


def levels_on_grid(
    branches: nn.ModuleList, levels: Sequence[torch.Tensor], size: tuple[int, int]
) -> torch.Tensor:
    """Each level through its branch, resized to the grid ``size``, concatenated."""
    parts = [
        resize_to_grid(branch(level), size) for branch, level in zip(branches, levels, strict=True)
    ]
    return torch.cat(parts, dim=1)


class BoundaryHead(nn.Module):
    """Class-boundary probability per grid cell from a frozen pyramid (IRN's edge branch).

    Each level: 1x1 convolution to ``width`` channels, group norm, ReLU, resized
    to the grid; concatenated; a last 1x1 convolution and a sigmoid.
    """

    def __init__(self, level_channels: Sequence[int], width: int = 32):
        super().__init__()
        self.level_channels = tuple(int(c) for c in level_channels)
        self.width = int(width)
        self.branches = level_branches(self.level_channels, self.width)
        self.mix = nn.Conv2d(width * len(self.level_channels), 1, 1)

    def forward(self, levels: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Boundary probabilities ``[B, *size]``."""
        return torch.sigmoid(self.mix(levels_on_grid(self.branches, levels, size)))[:, 0]


@lru_cache(maxsize=8)
def neighbour_offsets(radius: int) -> tuple[tuple[int, int], ...]:
    """Half of the offsets ``(dy, dx)`` with ``0 < dy^2 + dx^2 < radius^2``.

    One of each pair ``o, -o`` (``dy > 0``, or ``dy == 0`` and ``dx > 0``): an
    affinity is symmetric, so each unordered pair of cells is counted once.
    """
    if radius < 2:
        raise ValueError(f"radius must be >= 2, got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [
        (dy, dx)
        for dy in range(1, radius)
        for dx in range(-radius + 1, radius)
        if dy * dy + dx * dx < radius * radius
    ]
    return tuple(offsets)


@lru_cache(maxsize=512)
def path_offsets(offset: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """The cells a straight line from ``(0, 0)`` to ``offset`` passes, both ends included."""
    dy, dx = offset
    steps = max(abs(dy), abs(dx))
    return tuple(sorted({(round(dy * t / steps), round(dx * t / steps)) for t in range(steps + 1)}))


def _pair_windows(
    height: int, width: int, offset: tuple[int, int]
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Windows of the cells ``i`` and ``i + offset`` for every ``i`` whose pair is on the grid."""
    dy, dx = offset
    sources = (slice(0, height - dy), slice(max(0, -dx), width - max(0, dx)))
    targets = (slice(dy, height), slice(max(0, dx), width - max(0, -dx)))
    return sources, targets


def path_affinities(
    boundary: torch.Tensor, radius: int, offsets: Sequence[tuple[int, int]] | None = None
) -> list[torch.Tensor]:
    """Affinity of every cell to each neighbour: 1 - the strongest boundary on the path.

    ``boundary`` is ``[B, h, w]``; entry ``o`` of the result is ``[B, h', w']``
    over the cells whose neighbour at ``offsets[o]`` is on the grid.
    ``offsets``: a subset of ``neighbour_offsets(radius)`` (training samples
    them, :func:`sampled_offsets`); default all of them.
    """
    height, width = boundary.shape[-2:]
    out = []
    for offset in neighbour_offsets(radius) if offsets is None else offsets:
        (rows, cols), _ = _pair_windows(height, width, offset)
        span_rows, span_cols = rows.stop - rows.start, cols.stop - cols.start
        corners = [(rows.start + py, cols.start + px) for py, px in path_offsets(offset)]
        windows = [boundary[..., y : y + span_rows, x : x + span_cols] for y, x in corners]
        # One max over the stacked windows: in training its backward is one op, where a
        # chain of pairwise maxima costs two masked fills per path cell (half a step's time).
        out.append(1 - torch.stack(windows).amax(dim=0))
    return out


def sampled_offsets(
    radius: int, share: float, rng: np.random.Generator
) -> tuple[tuple[int, int], ...]:
    """A random ``share`` of ``neighbour_offsets(radius)`` (at least one), in their order.

    Training draws a new sample per batch, so over the batches every offset is
    trained on (in a ``share`` of them), at ``share`` of the cost of the path
    maxima, which dominate a training step at radius 10.
    """
    offsets = neighbour_offsets(radius)
    if share >= 1.0:
        return offsets
    count = max(1, round(share * len(offsets)))
    picked = np.sort(rng.choice(len(offsets), size=count, replace=False))
    return tuple(offsets[i] for i in picked)


def affinity_loss(
    affinities: Sequence[torch.Tensor],
    labels: torch.Tensor,
    radius: int,
    offsets: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """The papers' balanced loss over every pair of known cells within ``radius``.

    ``labels`` is ``[B, h, w]`` (int64; 255 unknown), ``affinities`` as
    :func:`path_affinities` returns them for ``offsets`` (default all within
    ``radius``). Background-background and
    foreground-foreground pairs (same label) should have affinity 1, pairs of
    different labels 0; the three groups weigh 1/4, 1/4 and 1/2 whatever their
    sizes, so the many background pairs do not drown the rest.
    """
    height, width = labels.shape[-2:]
    sums = [affinities[0].new_zeros(()) for _ in range(3)]
    counts = [0, 0, 0]
    pairs = neighbour_offsets(radius) if offsets is None else offsets
    for affinity, offset in zip(affinities, pairs, strict=True):
        (rs, cs), (rd, cd) = _pair_windows(height, width, offset)
        a, b = labels[..., rs, cs], labels[..., rd, cd]
        known = (a != UNKNOWN) & (b != UNKNOWN)
        same = known & (a == b)
        background = a == 0
        keep = -torch.log(affinity.clamp(min=LOG_FLOOR))
        cut = -torch.log((1 - affinity).clamp(min=LOG_FLOOR))
        groups = ((same & background, keep), (same & ~background, keep), (known & ~same, cut))
        for index, (mask, term) in enumerate(groups):
            # where, not term[mask]: no index gathered forward and scattered back
            sums[index] = sums[index] + torch.where(mask, term, 0.0).sum()
            counts[index] += int(mask.sum())
    weights = (0.25, 0.25, 0.5)
    present = [w for w, n in zip(weights, counts, strict=True) if n]
    if not present:
        return affinities[0].new_zeros(())
    loss = sum(w * s / n for w, s, n in zip(weights, sums, counts, strict=True) if n)
    return loss / sum(present)


@dataclass(frozen=True)
class WalkSettings:
    """How far and how sharply scores spread (IRN: radius 5, beta 10, 2^8 steps)."""

    radius: int = 5
    beta: float = 20.0
    steps: int = 32


@dataclass(frozen=True)
class _WalkPattern:
    indptr: np.ndarray  # CSR row pointers
    indices: np.ndarray  # CSR column of each entry
    order: np.ndarray  # entry i of the CSR data is entry order[i] of the listed values
    rows: np.ndarray  # CSR row of each entry


@lru_cache(maxsize=8)  # about 6 MB each for a 64 x 64 grid at radius 5
def _walk_pattern(shape: tuple[int, int], radius: int) -> _WalkPattern:
    """Where each cell's affinities go in the grid's CSR matrix (the same for every image)."""
    height, width = shape
    index = np.arange(height * width).reshape(height, width)
    rows, cols = [index.ravel()], [index.ravel()]  # the self-loops first
    for offset in neighbour_offsets(radius):
        (rs, cs), (rd, cd) = _pair_windows(height, width, offset)
        source, target = index[rs, cs].ravel(), index[rd, cd].ravel()
        rows += [source, target]
        cols += [target, source]
    row, col = np.concatenate(rows), np.concatenate(cols)
    order = np.lexsort((col, row))  # CSR order: by row, then column
    indptr = np.zeros(height * width + 1, np.int64)
    np.cumsum(np.bincount(row, minlength=height * width), out=indptr[1:])
    arrays = (indptr, col[order].astype(np.int64), order, row[order])
    for array in arrays:
        array.setflags(write=False)  # shared by every walk on this grid
    return _WalkPattern(*arrays)


def transition_matrix(
    affinities: Sequence[np.ndarray], shape: tuple[int, int], settings: WalkSettings
) -> sparse.csr_matrix:
    """Row-stochastic sparse ``T`` over the grid's cells from half-offset affinities.

    ``A_ij = a_ij ** beta`` for neighbours within the radius (both directions),
    ``A_ii = 1``; ``T = D^-1 A``. The sparsity pattern depends only on the grid
    and the radius, so it is built once per grid size, not per image.
    """
    pattern = _walk_pattern(tuple(shape), settings.radius)
    values = [np.ones(shape[0] * shape[1])]
    for affinity in affinities:
        weight = np.power(np.asarray(affinity, np.float64).ravel(), settings.beta)
        values += [weight, weight]
    data = np.concatenate(values)[pattern.order]
    degree = np.add.reduceat(data, pattern.indptr[:-1])  # every row holds its self-loop
    data *= (1.0 / degree)[pattern.rows]
    size = shape[0] * shape[1]
    return sparse.csr_matrix((data, pattern.indices, pattern.indptr), shape=(size, size))


def random_walk(scores: np.ndarray, transition: sparse.csr_matrix, steps: int) -> np.ndarray:
    """``T^steps`` applied to every channel of ``scores`` ``[C, h, w]``.

    In float64 with torch's sparse product, about 4x scipy's here; the result
    is the same for any thread count (tested) and equalled scipy's to the bit
    on the grids compared.
    """
    channels, height, width = scores.shape
    x = torch.from_numpy(np.ascontiguousarray(scores.reshape(channels, -1).T, np.float64))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        matrix = torch.sparse_csr_tensor(
            torch.from_numpy(transition.indptr.astype(np.int64)),
            torch.from_numpy(transition.indices.astype(np.int64)),
            torch.from_numpy(np.asarray(transition.data, np.float64)),
            size=transition.shape,
            check_invariants=False,  # made by transition_matrix: sorted, in range
        )
        for _ in range(steps):
            x = matrix @ x
    return x.numpy().T.reshape(channels, height, width).astype(np.float32)


def walk_cams(
    cams: np.ndarray, boundary: np.ndarray, settings: WalkSettings, grid: tuple[int, int]
) -> np.ndarray:
    """CAMs ``[K, H, W]`` walked over the boundary map ``[*grid]``; each map max 1 again.

    The CAMs are averaged onto the grid and zeroed on boundaries (IRN: mass
    put on an outline would leak both ways), walked, brought back to
    ``H x W`` bilinearly and divided by their own maximum.
    """
    k, height, width = cams.shape
    if k == 0:
        return np.zeros_like(cams, dtype=np.float32)
    on_grid = resize_to_grid(torch.from_numpy(np.ascontiguousarray(cams, np.float32))[None], grid)
    start = on_grid[0].numpy() * (1.0 - boundary)[None]
    affinities = path_affinities(torch.from_numpy(boundary)[None], settings.radius)
    transition = transition_matrix([a[0].numpy() for a in affinities], grid, settings)
    walked = random_walk(start, transition, settings.steps)
    full = F.interpolate(
        torch.from_numpy(walked)[None], size=(height, width), mode="bilinear", align_corners=False
    )[0].clamp_(min=0)
    peak = full.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
    return (full / peak).numpy()
