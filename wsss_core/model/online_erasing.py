"""Online adversarial erasing: two linear heads on one backbone (ACoL, Zhang et al.,
"Adversarial Complementary Learning for Weakly Supervised Object Localization", CVPR 2018).

A CAM fires on the few cells that tell a class apart. ACoL trains a second
classifier head that cannot see them: head A is the usual GAP + linear on the
backbone's last features; head B (the same shape) gets the same features with
every cell where A's normalised CAM of one of the image's classes is >=
``threshold`` set to zero, so B has to find the class elsewhere in the object.
Both heads' losses are summed. The map of a class is the element-wise max of
the two heads' normalised maps (ACoL fuses them by max)::

    A_c = relu(W_A[c] . F) / max          F' = F * [max_c in labels A_c < threshold]
    B_c = relu(W_B[c] . F') / max         H_c = max(A_c, B_c)

The erased region is a constant of the step (no gradient flows through the
mask). Training erases with the ground-truth labels of each image, the cam
stage with the classes it draws (the image's labels as well). The score the
classifier reports (validation mAP, review's flags) is head A's: it needs no
labels, and B's score depends on which classes were erased.
"""

from __future__ import annotations

import torch
from torch import nn


def normalised_maps(maps: torch.Tensor) -> torch.Tensor:
    """ReLU, then each map ``[..., h, w]`` divided by its own maximum (all-zero maps stay 0)."""
    maps = maps.relu()
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return maps / torch.where(peak > 0, peak, torch.ones_like(peak))


def linear_maps(head: nn.Linear, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``head``'s CAMs ``[B, S, h, w]`` (no ReLU) of ``classes`` ``[B, S]`` over ``features``."""
    weights = head.weight[classes].to(features.dtype)  # [B, S, K]
    # [B, S, K] x [B, K, h*w]: every target's map in one batched matmul.
    return torch.bmm(weights, features.flatten(2)).unflatten(2, features.shape[2:])


class OnlineErasingHead(nn.Module):
    """Head A (GAP + linear) and head B, which sees the features with A's high-CAM cells erased."""

    def __init__(self, in_channels: int, num_classes: int, threshold: float) -> None:
        super().__init__()
        if not 0 < threshold < 1:
            raise ValueError(f"the erasing threshold must be in (0, 1), got {threshold}")
        self.num_classes = num_classes
        self.threshold = float(threshold)
        self.first = nn.Linear(in_channels, num_classes)
        self.second = nn.Linear(in_channels, num_classes)

    def erased(
        self, features: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """``features`` ``[B, K, h, w]`` with zeros wherever head A's normalised CAM of one of
        ``classes[b][valid[b]]`` is >= the threshold: what head B sees."""
        with torch.no_grad():  # the mask is a constant of the step, as in ACoL
            maps = normalised_maps(linear_maps(self.first, features.detach(), classes))
            high = (maps >= self.threshold) & valid[..., None, None]
            keep = ~high.any(dim=1, keepdim=True)  # [B, 1, h, w]
        return features * keep.to(features.dtype)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Head A's scores ``[B, C]``: what the classifier reports."""
        return self.first(features.mean(dim=(2, 3)))

    def branch_logits(
        self, features: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Head A's and head B's scores; B's erased by ``targets`` ``[B, C]`` (multi-hot labels)."""
        classes, valid = label_slots(targets)
        second = self.second(self.erased(features, classes, valid).mean(dim=(2, 3)))
        return self(features), second

    def class_maps(
        self, features: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """The fused maps ``[B, S, h, w]``: max of A's and B's normalised CAMs (ReLU'd).

        B sees the features erased by A's maps of the valid targets of each image.
        """
        first = normalised_maps(linear_maps(self.first, features, classes))
        erased = self.erased(features, classes, valid)
        second = normalised_maps(linear_maps(self.second, erased, classes))
        return torch.maximum(first, second)


def label_slots(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-hot ``targets`` ``[B, C]`` as padded class ids ``[B, S]`` and a validity mask."""
    positive = targets > 0.5
    width = max(1, int(positive.sum(dim=1).max()))
    # Labelled class ids first (a stable sort keeps them in class order), padding after.
    order = torch.argsort((~positive).to(torch.int8), dim=1, stable=True)[:, :width]
    valid = torch.gather(positive, 1, order)
    return order, valid
