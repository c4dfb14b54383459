"""What the remedy tests share: a tiny seeded feature stack and the pinned default hashes.

Test modules import it by name (pytest puts tests/ on the path).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from wsss_core.cam import class_activation_maps

NUM_CLASSES = 4
FEATURE_CHANNELS = 16
TARGETS = [[0, 2], [1], [3, 0]]  # labelled classes of three test images
STAGES = ("train", "cam", "affinity", "seeds", "grown", "crf")
# Every stage's hash of the default config before the remedies existed (computed from the
# code of commit 8cbec9c): the maps and classifiers made then must stay current. Two moved
# on 2026-12-02, when the affinity stage became a default (with affinity.train_pair_share):
# its own, and the crf stage's, which covers the affinity section while the stage is on.
# The crf stage's moved again on 2026-12-03, when self-training became a default (its section
# enters that lineage while on), on 2026-12-06, when its head began to train on 2 threads,
# on 2026-12-07 with crf.background_score, and again with self_training.max_upscale, and
# on 2026-12-08 with self_training.average_epochs. Until then classifiers, CAMs, seeds and
# grown regions made before stayed current; later on 2026-12-08 cam.scales gained 0.75, which
# moves every stage's hash from the cam stage on (classifiers stay current).
DEFAULT_HASHES = {
    "train": "423bfa623dca990f",
    "cam": "67b6b280fdd4cd00",
    "affinity": "82ae4b613583d847",
    "seeds": "d69db860d1483132",
    "grown": "7cf7d704c5a2664e",
    "crf": "da95a76bc992113d",
}
# cam.scales until 2026-12-08, and the hashes of the defaults just before, which a workspace
# that sets those scales keeps: the "as then" configs below set them.
EARLIER_CAM_SCALES = [1.0, 0.5, 1.5]
EARLIER_HASHES = {
    "train": "423bfa623dca990f",
    "cam": "c60c5f612dd54b96",
    "affinity": "d0b665814a753dcb",
    "seeds": "c70fb4ad613a1578",
    "grown": "6225a23a79dac4da",
    "crf": "2b0d18f2810cc7df",
}
# The crf stage's hash with self-training switched off and the background candidates ranked
# by edges (``crf.background_score``, as until 2026-12-07): that of the defaults of
# 2026-12-02, so a workspace that keeps both keeps its final masks.
CRF_HASH_WITHOUT_SELF_TRAINING = "641b34483ab3f596"
# ... and with the affinity stage switched off too: that of the defaults before 2026-12-02.
CRF_HASH_WITHOUT_AFFINITY = "e1ed78f7733391ea"


def tiny_features(seed: int = 0) -> nn.Sequential:
    """conv-BN-ReLU x 2 to 16 channels at stride 4 (16 x 16 cells at 64 px), seeded."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, FEATURE_CHANNELS, 3, stride=2, padding=1),
        nn.BatchNorm2d(FEATURE_CHANNELS),
        nn.ReLU(),
    )


def tiny_images(side: int = 64, count: int = 3) -> torch.Tensor:
    """``count`` seeded random RGB inputs of ``side`` pixels (normalised-input scale)."""
    return torch.randn(count, 3, side, side, generator=torch.Generator().manual_seed(1))


def multi_hot(targets: list[list[int]]) -> torch.Tensor:
    """Float ``[B, NUM_CLASSES]`` targets with a 1 at each image's labelled classes."""
    hot = torch.zeros(len(targets), NUM_CLASSES)
    for i, classes in enumerate(targets):
        hot[i, classes] = 1.0
    return hot


def assert_cuda_maps_match_cpu(model: nn.Module, images: torch.Tensor) -> None:
    """The model's multi-scale, flipped CAMs of ``TARGETS`` on CUDA equal the CPU's (1e-4)."""
    cpu = class_activation_maps(model, images, TARGETS, scales=(1.0, 0.5), flip=True)
    cuda = class_activation_maps(
        model.to("cuda"), images.to("cuda"), TARGETS, scales=(1.0, 0.5), flip=True
    )
    model.to("cpu")
    for a, b in zip(cpu, cuda, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4)
