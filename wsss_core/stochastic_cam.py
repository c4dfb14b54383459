"""Stochastic hidden-unit selection over cached features (after FickleNet, Lee et al. CVPR 2019).

FickleNet's observation: a classifier that sees *all* hidden units of a
location scores only its most discriminative parts; one that sees a random
subset of them is sometimes forced to score other parts of the object, so many
maps drawn with different subsets, aggregated, cover more of it. FickleNet
drops hidden units at random in each sliding window of the last feature map
(its centre always kept) and feeds the windows to a convolution trained that
way. Our classifier is ``features -> GAP -> linear``, trained without
dropout, so here the selection is at inference only and the "classifier" of a
window is the linear head applied to the window's kept units (a CAM, one
matrix product per pass):

    score_c(x) = sum_k W[c, k] * mean_{d in window(x)} s_d * M_kd(x) * A_k(x + d)

``M`` keeps each hidden unit of each window position with probability
``keep`` (``s_d = 1 / keep`` where units may be dropped, so a pass's
expectation is the window's mean CAM); with ``window > 1`` the centre ``d = 0``
is always kept, as in FickleNet; ``window = 1`` drops units of the location
itself. Each pass's map is ReLU'd and divided by its maximum, the passes'
maps are aggregated and the result is put back on the plain CAM's scale.

Aggregation. FickleNet's localisation map grows as more random selections are
combined: a union of what the passes activate, here ``max``. We default to the
``mean``: it converges as passes are added (to the expected normalised map, so
the passes are a setting of cost, not of size) and one unlucky pass cannot
light a background pixel for good. On the digits demo (ARCHITECTURE.md,
"Remedies") the mean leaves the CAM nearly as it is (this head was trained
without dropout, and a sum over ~1000 kept units concentrates around the plain
CAM), while ``max`` widens the seeds and grown regions but lets the CRF take
in background.

Cost: the backbone runs once per image, scale and flip (its features are
cached); each pass draws ``K x window^2 x h x w`` uniform numbers on the CPU
and runs one ``[S, K] x [K, h*w]`` product. The draws come from one
``torch.Generator`` per image seeded from the image's id, made on the CPU
whatever the device, so an image's selections do not depend on its batch
mates, its shard, the runner, or CPU versus CUDA.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

__all__ = [
    "AGGREGATES",
    "Aggregate",
    "StochasticSelection",
    "image_generators",
    "image_seed",
    "stochastic_maps",
]


Aggregate = Literal["mean", "max"]
AGGREGATES: tuple[str, ...] = get_args(Aggregate)


@dataclass(frozen=True)
class StochasticSelection:
    """How many passes, which share of hidden units each keeps, over which window, and how
    the passes' maps combine (``mean`` converges; ``max``, the union, keeps growing)."""

    passes: int
    keep: float
    window: int = 1
    aggregate: Aggregate = "mean"

    def __post_init__(self) -> None:
        if self.passes < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"window must be a positive odd number, got {self.window}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")


def image_seed(seed: int, image_id: str) -> int:
    """The generator seed of one image: a hash of the config seed and the image's id."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image (CPU on every device, so CUDA draws the same units)."""
    return [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]


def stochastic_maps(
    weights: torch.Tensor,
    features: torch.Tensor,
    generator: torch.Generator,
    selection: StochasticSelection,
) -> torch.Tensor:
    """``selection.passes`` normalised stochastic maps aggregated, ``[S, h, w]``.

    The aggregate (mean or max) is multiplied by the peak of the target's plain
    CAM (all units kept), the scale a map has without selection: multi-scale and
    flip sums then weigh each input as they do for plain CAMs, and with
    ``keep = 1`` (window 1) the result is the plain CAM.

    Args:
        weights: the head's rows for the image's targets, ``[S, K]``.
        features: the image's cached last features ``[K, h, w]``.
        generator: the image's generator; it advances by ``passes`` draws.
        selection: passes, keep probability, window side, aggregate.
    """
    channels, height, width = features.shape
    offsets = selection.window**2
    windows, scale, counts = _windows(features, selection)
    combined = torch.zeros(
        (weights.shape[0], height, width), dtype=features.dtype, device=features.device
    )
    for _ in range(selection.passes):
        kept = torch.rand((channels, offsets, height, width), generator=generator)
        kept = (kept < selection.keep).to(features.device)
        if offsets > 1:
            kept[:, offsets // 2] = True  # the centre is never dropped
        selected = (windows * kept * scale).sum(1) / counts  # [K, h, w]
        scores = (weights @ selected.flatten(1)).view(-1, height, width).relu()
        peak = scores.amax(dim=(1, 2), keepdim=True)
        normalised = scores / torch.where(peak > 0, peak, torch.ones_like(peak))
        if selection.aggregate == "max":
            combined = torch.maximum(combined, normalised)
        else:
            combined += normalised
    if selection.aggregate == "mean":
        combined /= selection.passes
    # Back on the plain CAM's scale, so scales and flips weigh as they do without selection.
    plain_peak = (weights @ features.flatten(1)).relu().amax(dim=1)[:, None, None]
    return combined * plain_peak


def _windows(
    features: torch.Tensor, selection: StochasticSelection
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each location's window ``[K, window^2, h, w]``, the scale of each window position
    (``1 / keep`` where units may be dropped, 1 at the kept centre) and how many
    positions of each window lie inside the map (zero padding is no neighbour)."""
    channels, height, width = features.shape
    window, device, dtype = selection.window, features.device, features.dtype
    if window == 1:
        scale = torch.full((1, 1, 1), 1.0 / selection.keep, dtype=dtype, device=device)
        return features[:, None], scale, torch.ones((1, 1), dtype=dtype, device=device)
    pad, offsets = window // 2, window * window
    windows = F.unfold(features[None], window, padding=pad).view(channels, offsets, height, width)
    scale = torch.full((offsets, 1, 1), 1.0 / selection.keep, dtype=dtype, device=device)
    scale[offsets // 2] = 1.0
    ones = torch.ones((1, 1, height, width), dtype=dtype, device=device)
    counts = F.unfold(ones, window, padding=pad).view(offsets, height, width).sum(0)
    return windows, scale, counts
