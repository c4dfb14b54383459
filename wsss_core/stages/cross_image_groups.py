"""The cam stage's cross-image groups: each image's partners, whatever the batching.

The records are cut into groups of ``cam.cross_image_group`` by their order (a
shard's manifest order). The first time an image of a group is wanted, the
group's images are read and each readable one gives its last features (one
forward pass at network size, scale 1, unflipped, one image at a time, so the
features do not depend on which images share a batch); they serve as the
partners of every scale and flip of the others (:mod:`wsss_core.cross_image`).
An unreadable image is recorded by the guard once and joins no group. A group's
pixels and features are dropped once all its images have been computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from wsss_core.cam import last_features
from wsss_core.cross_image import Partners, partner_indices, partners_of
from wsss_core.data.manifest import ImageRecord
from wsss_core.model.checkpoint import LoadedClassifier

__all__ = ["CrossImageGroups"]


class CrossImageGroups:
    """Pixels and partners of the records, loaded a group at a time."""

    def __init__(
        self,
        classifier: LoadedClassifier,
        records: Sequence[ImageRecord],
        group_size: int,
        read: Callable[[ImageRecord], np.ndarray | None],
        network_tensor: Callable[[ImageRecord, np.ndarray], torch.Tensor],
        device: torch.device,
    ) -> None:
        self._classifier = classifier
        self._records = records
        self._group_size = group_size
        self._read = read
        self._network_tensor = network_tensor
        self._device = device
        self._pixels: dict[int, np.ndarray | None] = {}
        self._partners: dict[int, Partners] = {}
        self._pending: dict[int, set[int]] = {}  # group -> its indices not yet released

    def pixels(self, index: int) -> np.ndarray | None:
        """The image's pixels (None: unreadable), its group loaded if it is not yet."""
        self._load(index // self._group_size)
        return self._pixels[index]

    def partners(self, index: int) -> Partners:
        return self._partners[index]

    def release(self, indices: Iterable[int]) -> None:
        """These images are computed: a group none of whose images is left is dropped."""
        for index in indices:
            group = index // self._group_size
            pending = self._pending[group]
            pending.discard(index)
            if not pending:
                for member in self._members(group):
                    self._pixels.pop(member, None)
                    self._partners.pop(member, None)

    def _members(self, group: int) -> range:
        first = group * self._group_size
        return range(first, min(first + self._group_size, len(self._records)))

    def _load(self, group: int) -> None:
        if group in self._pending:
            return
        members = self._members(group)
        self._pending[group] = set(members)
        for index in members:
            self._pixels[index] = self._read(self._records[index])
        readable = [index for index in members if self._pixels[index] is not None]
        features = []
        for index in readable:
            pixels = self._pixels[index]
            assert pixels is not None
            tensor = self._network_tensor(self._records[index], pixels)[None].to(self._device)
            features.append(last_features(self._classifier.model, tensor)[0])
        labels = [self._records[index].labels for index in readable]
        for index, partners in zip(readable, partner_indices(labels), strict=True):
            self._partners[index] = partners_of(features, partners)
