"""Iterative adversarial erasing (AE-PSL, Wei et al., "Object Region Mining with
Adversarial Erasing", CVPR 2017).

A CAM fires on the few parts that tell a class apart. AE-PSL trains a
classifier, erases from the images the regions where its CAM of a labelled
class is high, trains a new classifier on the erased images (which must find
the class elsewhere), and repeats; the mined object is the union of every
round's regions. Here round 0 trains as without the option; round ``k``
trains a fresh classifier on its training images erased by every earlier
round in turn: round ``j``'s normalised CAM of each labelled class, on the
image as round ``j`` saw it, marks the pixels (>= ``threshold``) that are set
to zero, the dataset mean colour after normalisation. The erasing runs on the
fly on each augmented batch (the earlier rounds are frozen), so the erased
region follows the crop. The cam stage erases the same way and takes the
union: the element-wise max of the rounds' normalised maps::

    x_0 = x      M_j = max_c in labels CAM_j(x_j)_c      x_{j+1} = x_j * [M_j < threshold]
    H = max_j CAM_j(x_j)

The classifier's score (validation mAP, the cam stage's scores) is round 0's:
it sees the whole image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

# One CAM function per call site (the cam stage's settings, or plain CAMs while training):
# (model, images, class lists) -> per image its normalised maps [S, H, W] at the input size.
MapsFn = Callable[[nn.Module, torch.Tensor, Sequence[Sequence[int]]], list[torch.Tensor]]
RoundMaps = list[torch.Tensor]


class ErasingRoundsClassifier(nn.Module):
    """The classifiers of every erasing round, round 0 first; scores are round 0's.

    ``features`` and ``head`` are round 0's, so what reads a classifier's trunk
    (the affinity stage, initial weights) reads round 0's.
    """

    def __init__(self, rounds: Sequence[nn.Module], threshold: float) -> None:
        super().__init__()
        if len(rounds) < 2:
            raise ValueError(f"iterative erasing needs at least 2 rounds, got {len(rounds)}")
        if not 0 < threshold < 1:
            raise ValueError(f"the erasing threshold must be in (0, 1), got {threshold}")
        self.rounds = nn.ModuleList(rounds)
        self.threshold = float(threshold)

    @property
    def features(self) -> nn.Module:
        return self.rounds[0].features

    @property
    def head(self) -> nn.Module:
        return self.rounds[0].head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.rounds[0](images)


def erased(images: torch.Tensor, maps: Sequence[torch.Tensor], threshold: float) -> torch.Tensor:
    """``images`` ``[B, 3, H, W]`` (normalised) with zeros where one of image ``b``'s maps
    ``maps[b]`` ``[S, H, W]`` is >= ``threshold``."""
    keep = torch.ones(images.shape[0], 1, *images.shape[2:], dtype=torch.bool)
    for index, image_maps in enumerate(maps):
        if len(image_maps):
            keep[index, 0] = ~(image_maps >= threshold).any(dim=0).cpu()
    return images * keep.to(images.device, images.dtype)


def erasing_rounds(
    rounds: Sequence[nn.Module],
    images: torch.Tensor,
    targets: Sequence[Sequence[int]],
    threshold: float,
    maps_fn: MapsFn,
) -> tuple[list[RoundMaps], torch.Tensor]:
    """Each round's maps on its erased images, and the images after the last round's erasing.

    Round ``j`` sees ``images`` erased by rounds ``0 .. j-1``; returns
    ``(maps of every round, images erased by all of them)``.
    """
    per_round: list[RoundMaps] = []
    current = images
    for model in rounds:
        maps = maps_fn(model, current, targets)
        per_round.append(maps)
        current = erased(current, maps, threshold)
    return per_round, current


def union(per_round: Sequence[RoundMaps]) -> list[torch.Tensor]:
    """Per image, the element-wise max over the rounds of its maps."""
    return [torch.stack(tuple(maps)).amax(dim=0) for maps in zip(*per_round, strict=True)]
