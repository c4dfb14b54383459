"""The multi-dilated convolution (MDC) head (Wei et al., "Revisiting Dilated Convolution",
CVPR 2018).

A CAM from global average pooling + linear fires on the few cells that tell a
class apart. MDC puts several 3x3 convolution branches with different
dilations on the backbone's last features; a dilated branch sees the
discriminative part from cells farther away, so its map also lights up those
neighbours (non-discriminative parts of the object). Each branch is a block
as in the paper: a 3x3 convolution to ``width`` channels (padding = dilation,
so the grid keeps its size) and a ReLU, then global average pooling and a
linear classifier of its own, so each branch has an ordinary CAM ``H_d``:
``W_d`` applied per location to its hidden features. Training sums the
branches' multi-label losses (the paper's choice). The map and the score
combine the branches the same way::

    H = H_1 + mean(H_d for d > 1)      logit = logit_1 + mean(logit_d for d > 1)

The paper averages the dilated maps so that the d=1 branch, the most
precise one, keeps half the weight of the combination (it reports d = 1, 3,
6, 9). Since each branch's logit is the spatial mean of its (un-ReLU'd) CAM
plus a bias, the combined logit is the spatial mean of the combined map plus
the combined bias: the score the classifier reports belongs to the map the
cam stage draws, as for the plain head. A dilation as large as the feature
grid reads only padding beyond its centre tap: at stride 16 a 128 px input
has 8 x 8 cells, so d = 9 there is close to a 1x1 convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wsss_core.config import check_dilations


def combine_branches(per_branch: Sequence[torch.Tensor]) -> torch.Tensor:
    """``per_branch[0] + mean(per_branch[1:])``: the d=1 branch plus the dilated ones' mean.

    The one definition of the combination, used for maps and for scores alike.
    """
    first, dilated = per_branch[0], per_branch[1:]
    if not dilated:
        return first
    return first + torch.stack(tuple(dilated)).mean(dim=0)


class DilatedBranch(nn.Module):
    """3x3 convolution with one dilation (grid size kept) + ReLU, then GAP + linear."""

    def __init__(self, in_channels: int, width: int, num_classes: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=dilation, dilation=dilation)
        self.classifier = nn.Linear(width, num_classes)

    @property
    def dilation(self) -> int:
        return int(self.conv.dilation[0])

    def hidden(self, features: torch.Tensor) -> torch.Tensor:
        """The branch's features ``[B, width, h, w]``: what its classifier pools."""
        return self.conv(features).relu()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Class scores ``[B, C]`` of this branch alone."""
        return self.classifier(self.hidden(features).mean(dim=(2, 3)))

    def class_maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """This branch's CAMs ``[B, S, h, w]`` (no ReLU) of ``classes`` ``[B, S]``."""
        hidden = self.hidden(features)
        weights = self.classifier.weight[classes].to(hidden.dtype)  # [B, S, width]
        # [B, S, width] x [B, width, h*w]: every target's map in one batched matmul.
        return torch.bmm(weights, hidden.flatten(2)).unflatten(2, hidden.shape[2:])


class MultiDilationHead(nn.Module):
    """One :class:`DilatedBranch` per dilation over the same backbone features."""

    def __init__(
        self, in_channels: int, num_classes: int, dilations: Sequence[int], width: int
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"the branch width must be >= 1, got {width}")
        try:
            dilations = check_dilations(list(dilations))
        except ValueError as error:
            raise ValueError(f"{error}, got {tuple(dilations)}") from None
        self.num_classes = num_classes
        self.branches = nn.ModuleList(
            DilatedBranch(in_channels, width, num_classes, d) for d in dilations
        )

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(branch.dilation for branch in self.branches)

    def branch_logits(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each branch's scores ``[B, C]``, in dilation order: each gets its own loss."""
        return tuple(branch(features) for branch in self.branches)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The combined scores ``[B, C]`` (:func:`combine_branches`)."""
        return combine_branches(self.branch_logits(features))

    def class_maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The combined CAMs ``[B, S, h, w]`` (no ReLU): ``H_1 + mean(H_d, d > 1)``."""
        return combine_branches([branch.class_maps(features, classes) for branch in self.branches])
