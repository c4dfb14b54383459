"""Cross-image affinity before the CAM head: a training-free variant of CIAN.

CIAN (Fan et al., "CIAN: Cross-Image Affinity Net for Weakly Supervised
Semantic Segmentation", AAAI 2020) lets each image's features attend to the
features of other images that share a class, so the regions an object's parts
have in common with the same class elsewhere are lifted together. CIAN learns
the attention's projections in training; this variant learns nothing and uses
the classifier's own last features ``f`` (``[K, h, w]``):

    m_ij = softmax_j(q_i k_j^T / temperature) f_j      (q, k: L2-normalised f)
    f_i' = f_i + weight * mean_j m_ij

over the partners ``j`` of image ``i``: the other images of its group that
share at least one labelled class with it. The attention runs over locations,
so partners of any size mix. An image without partners keeps its features as
they are (its maps are bit-identical to the option off). Each image's message
is computed on its own, so it depends on its partners, never on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["CrossImageAffinity", "Partners", "partner_indices", "partners_of", "refined"]


@dataclass(frozen=True)
class CrossImageAffinity:
    """How strongly and how sharply an image attends to its partners."""

    weight: float  # w in f + w * mean_j m_ij
    temperature: float  # of the softmax over a partner's locations (cosine similarities)

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"cross-image weight must be positive, got {self.weight}")
        if not self.temperature > 0:
            raise ValueError(f"cross-image temperature must be positive, got {self.temperature}")


@dataclass(frozen=True)
class Partners:
    """One image's partners' features, each ``[h_j * w_j, K]``: values and unit-norm keys."""

    values: tuple[torch.Tensor, ...]
    keys: tuple[torch.Tensor, ...]

    def __len__(self) -> int:
        return len(self.values)


NO_PARTNERS = Partners((), ())


def partner_indices(labels: Sequence[Sequence[int]]) -> list[list[int]]:
    """For each image of a group, the others that share at least one labelled class."""
    sets = [set(classes) for classes in labels]
    return [
        [j for j, other in enumerate(sets) if j != i and mine & other]
        for i, mine in enumerate(sets)
    ]


def partners_of(features: Sequence[torch.Tensor], indices: Sequence[int]) -> Partners:
    """The partners ``indices`` of a group whose features ``[K, h, w]`` are ``features``."""
    values = tuple(features[j].flatten(1).T.contiguous() for j in indices)
    return Partners(values, tuple(F.normalize(v, dim=1) for v in values))


def refined(
    features: torch.Tensor, partners: Partners, settings: CrossImageAffinity
) -> torch.Tensor:
    """``features`` ``[K, h, w]`` plus the weighted mean message from ``partners``."""
    if not len(partners):
        return features
    channels = features.shape[0]
    flat = features.flatten(1).T  # [h*w, K]
    if partners.values[0].shape[1] != channels:
        raise ValueError(
            f"partner features have {partners.values[0].shape[1]} channels, the image's {channels}"
        )
    queries = F.normalize(flat, dim=1)
    message = torch.zeros_like(flat)
    for values, keys in zip(partners.values, partners.keys, strict=True):
        attention = torch.softmax(queries @ keys.T / settings.temperature, dim=1)
        message += attention @ values
    update = (message / len(partners)).T.reshape(features.shape)
    return features + settings.weight * update
