"""CAM-ready multi-label classifiers built from torchvision backbones.

The default model is ``features -> global average pooling -> linear``. That
shape is what makes a class activation map a single matrix product (Zhou et
al., CVPR 2016): ``CAM_c = sum_k W[c, k] * A_k`` over the feature maps ``A``.
With ``train.multi_dilation`` the head is instead the multi-dilated
convolution branches of :mod:`~wsss_core.model.multi_dilation`, each its own
GAP + linear classifier (:class:`MultiDilationClassifier`). With
``train.online_erasing_threshold`` it is two linear heads, the second seeing the
features with the first's high-CAM cells erased (:class:`OnlineErasingClassifier`,
:mod:`~wsss_core.model.online_erasing`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision import models

from wsss_core.model.iterative_erasing import ErasingRoundsClassifier
from wsss_core.model.multi_dilation import MultiDilationHead
from wsss_core.model.online_erasing import OnlineErasingHead


@dataclass(frozen=True)
class BackboneSpec:
    """How to cut a torchvision model into a feature extractor."""

    build: Callable[..., nn.Module]
    feature_channels: int
    family: str  # "resnet" or "mobilenet"


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(models.resnet18, 512, "resnet"),
    "resnet34": BackboneSpec(models.resnet34, 512, "resnet"),
    "resnet50": BackboneSpec(models.resnet50, 2048, "resnet"),
    "resnet101": BackboneSpec(models.resnet101, 2048, "resnet"),
    "mobilenet_v2": BackboneSpec(models.mobilenet_v2, 1280, "mobilenet"),
    "mobilenet_v3_small": BackboneSpec(models.mobilenet_v3_small, 576, "mobilenet"),
    "mobilenet_v3_large": BackboneSpec(models.mobilenet_v3_large, 960, "mobilenet"),
}


def _feature_extractor(backbone: nn.Module, family: str) -> nn.Module:
    """Drop the torchvision model's pooling and classifier, keep the convolutions."""
    if family == "resnet":
        return nn.Sequential(
            backbone.conv1,
            backbone.bn1,
            backbone.relu,
            backbone.maxpool,
            backbone.layer1,
            backbone.layer2,
            backbone.layer3,
            backbone.layer4,
        )
    return backbone.features


class CamClassifier(nn.Module):
    """``features`` (a CNN) then global average pooling then ``head`` (linear).

    ``features`` is the default CAM layer: its output ``[B, K, h, w]`` feeds the
    pooling, so ``head.weight`` (``[C, K]``) turns it into per-class maps.
    """

    cam_layer_name = "features"

    def __init__(self, features: nn.Module, feature_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(feature_channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))

    def training_logits(
        self, images: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """The scores each term of the training loss is taken on: here the one output.

        ``targets`` (the batch's multi-hot labels) matter only to heads that erase.
        """
        return (self(images),)


class MultiDilationClassifier(nn.Module):
    """``features`` then the MDC head: dilated 3x3 branches, each GAP + its own linear.

    ``features`` is the CAM layer as in :class:`CamClassifier`; the maps are the
    head's (:meth:`MultiDilationHead.class_maps`), the scores its combined logits.
    """

    cam_layer_name = "features"

    def __init__(
        self,
        features: nn.Module,
        feature_channels: int,
        num_classes: int,
        dilations: Sequence[int],
        width: int,
    ) -> None:
        super().__init__()
        self.features = features
        self.head = MultiDilationHead(feature_channels, num_classes, dilations, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def training_logits(
        self, images: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Each branch's scores: training sums their losses (Wei et al. 2018)."""
        return self.head.branch_logits(self.features(images))


class OnlineErasingClassifier(nn.Module):
    """``features`` then two GAP + linear heads, the second on erased features (ACoL).

    ``features`` is the CAM layer as in :class:`CamClassifier`; the maps are the
    head's fused ones (:meth:`OnlineErasingHead.class_maps`), the score head A's.
    """

    cam_layer_name = "features"

    def __init__(
        self, features: nn.Module, feature_channels: int, num_classes: int, threshold: float
    ) -> None:
        super().__init__()
        self.features = features
        self.head = OnlineErasingHead(feature_channels, num_classes, threshold)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def training_logits(
        self, images: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Head A's and head B's scores, B erased by the ground-truth ``targets``: losses summed."""
        if targets is None:
            raise ValueError("online erasing trains on the image labels: pass targets")
        return self.head.branch_logits(self.features(images), targets)


Classifier = CamClassifier | MultiDilationClassifier | OnlineErasingClassifier


def _remove_last_stride(features: nn.Module) -> None:
    """Output stride 32 -> 16: the last downsampling stage keeps its resolution (as IRN does).

    The pretrained weights stay valid; only the sampling grid of that stage changes,
    which doubles the CAM resolution at a modest compute cost.
    """
    last_strided: nn.Module | None = None
    for block in features.children():
        if any(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in block.modules()):
            last_strided = block
    if last_strided is None:
        raise ValueError("backbone has no stride-2 stage to remove")
    for module in last_strided.modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)


def build_classifier(
    backbone: str,
    num_classes: int,
    output_stride: int = 32,
    dilations: Sequence[int] = (),
    dilated_width: int = 0,
    erasing_threshold: float | None = None,
) -> Classifier:
    """A randomly initialised CAM-ready classifier for ``num_classes`` labels.

    ``dilations`` (non-empty): the MDC head, one branch of ``dilated_width``
    channels per dilation, instead of the linear head. ``erasing_threshold``:
    the two heads of online erasing (ACoL) instead.
    """
    if dilations and erasing_threshold is not None:
        raise ValueError("the MDC head and online erasing are two different heads: choose one")
    if backbone not in BACKBONES:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(f"unknown backbone {backbone!r}; choose one of: {known}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    spec = BACKBONES[backbone]
    torchvision_model = spec.build(weights=None)
    features = _feature_extractor(torchvision_model, spec.family)
    if output_stride == 16:
        _remove_last_stride(features)
    elif output_stride != 32:
        raise ValueError(f"output_stride must be 16 or 32, got {output_stride}")
    if erasing_threshold is not None:
        return OnlineErasingClassifier(
            features, spec.feature_channels, num_classes, erasing_threshold
        )
    if dilations:
        return MultiDilationClassifier(
            features, spec.feature_channels, num_classes, dilations, dilated_width
        )
    return CamClassifier(features, spec.feature_channels, num_classes)


def classifier_for(
    train_config: Mapping[str, Any], num_classes: int
) -> Classifier | ErasingRoundsClassifier:
    """The architecture a train config describes (a checkpoint's recorded one included).

    Training and checkpoint loading both build through here, so a checkpoint
    always reloads into the architecture it was trained as. Keys that older
    checkpoints lack mean what they meant then (stride 32, the linear head).
    With ``erasing_rounds`` it is the iterative-erasing union of that many + 1
    classifiers of the rest of the config.
    """
    threshold = train_config.get("online_erasing_threshold")
    rounds = int(train_config.get("erasing_rounds") or 0)
    if rounds:
        # Every round's classifier is an ordinary one; together they are the union classifier.
        single = {**train_config, "erasing_rounds": 0}
        return ErasingRoundsClassifier(
            [classifier_for(single, num_classes) for _ in range(rounds + 1)],
            float(train_config["erasing_threshold"]),
        )
    return build_classifier(
        str(train_config["backbone"]),
        num_classes,
        int(train_config.get("output_stride") or 32),
        dilations=tuple(train_config.get("multi_dilation") or ()),
        dilated_width=int(train_config.get("multi_dilation_width") or 0),
        erasing_threshold=None if threshold is None else float(threshold),
    )
