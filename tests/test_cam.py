"""Tests of wsss_core.cam: CAM, Grad-CAM, Grad-CAM++ against textbook references."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import EARLIER_CAM_SCALES, EARLIER_HASHES, STAGES
from torch import nn
from torchvision import models

from wsss_core.cam import class_activation_maps
from wsss_core.config import PipelineConfig, stage_config_hash
from wsss_core.model.classifier import CamClassifier, build_classifier

SIZE = 64
NUM_CLASSES = 5
ATOL = 1e-5
GRADIENT_METHODS = ("gradcam", "gradcampp")
BILINEAR = {"mode": "bilinear", "align_corners": False}


# --------------------------------------------------------------------------- fixtures


class MaxPoolNet(nn.Module):
    """conv -> relu -> target conv -> relu -> adaptive max-pool -> flatten -> linear.

    Not GAP + linear, so gradients vary over space and the CAM identity fails.
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.target = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.tail = nn.Sequential(
            nn.ReLU(inplace=inplace),
            nn.AdaptiveMaxPool2d(4),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, NUM_CLASSES),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.tail(self.target(self.stem(images)))


class ExplodingLinear(nn.Linear):
    """A head that fails after the target layer's hook has run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def tiny_cam_classifier() -> CamClassifier:
    """A small CamClassifier (conv-BN-ReLU x 2, GAP, linear): most tests need no ResNet."""
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
    )
    return CamClassifier(features, 16, NUM_CLASSES)


@pytest.fixture
def cam_model() -> CamClassifier:
    torch.manual_seed(0)
    return tiny_cam_classifier().eval()


@pytest.fixture(scope="module")
def resnet_cam_model() -> CamClassifier:
    torch.manual_seed(0)
    return build_classifier("resnet18", NUM_CLASSES).eval()


@pytest.fixture
def maxpool_net() -> MaxPoolNet:
    """In float64: Grad-CAM++'s denominator ``2 g^2 + sum(A) g^3`` can nearly cancel,
    so float32 rounding differences between batched and per-image gradients get
    amplified; comparing against the reference in float64 tests the algorithm."""
    torch.manual_seed(1)
    return MaxPoolNet().double().eval()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(2)
    return models.resnet18(weights=None, num_classes=NUM_CLASSES).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


# --------------------------------------------------------------------------- references


def _activation(model: nn.Module, layer: str, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Scores ``[1, C]`` and the layer's output for one image ``[3, H, W]``."""
    store: dict[str, torch.Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: store.update(a=out)
    )
    try:
        scores = model(image[None])
    finally:
        handle.remove()
    return scores, store["a"]


def reference_raw(
    model: nn.Module, layer: str, image: torch.Tensor, classes: Sequence[int], method: str
) -> torch.Tensor:
    """ReLU'd maps ``[T, h, w]`` for one image: one forward (+ backward) per class."""
    maps = []
    for c in classes:
        with torch.set_grad_enabled(method != "cam"):
            scores, a = _activation(model, layer, image)
        if method == "cam":
            weights = model.head.weight[c][None]
        else:
            (g,) = torch.autograd.grad(scores[0, c], a)
            if method == "gradcam":
                weights = g.mean(dim=(2, 3))
            else:  # Grad-CAM++, closed form as in pytorch-grad-cam
                alpha = g**2 / (2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3 + 1e-6)
                alpha = torch.where(g != 0, alpha, 0.0)
                weights = (alpha * g.clamp_min(0)).sum(dim=(2, 3))
        maps.append((weights[:, :, None, None] * a).sum(dim=1)[0].clamp_min(0))
    return torch.stack(maps).detach()


def finish(raw: torch.Tensor, size: int = SIZE) -> np.ndarray:
    """Upsample to the input size and divide each map by its maximum."""
    up = F.interpolate(raw[None], size=(size, size), **BILINEAR)[0]
    peak = up.amax(dim=(1, 2), keepdim=True)
    return (up / torch.where(peak > 0, peak, 1.0)).numpy()


def assert_no_hooks(model: nn.Module) -> None:
    for module in model.modules():
        assert not module._forward_hooks
        assert not module._forward_pre_hooks
        assert not module._backward_hooks


# --------------------------------------------------------------------------- CAM


def test_cam_shape_dtype_and_normalisation(
    resnet_cam_model: CamClassifier, images: torch.Tensor
) -> None:
    targets = [[2, 0], [4], [1, 3, 0]]
    maps = class_activation_maps(resnet_cam_model, images, targets)
    assert [m.shape for m in maps] == [(len(t), SIZE, SIZE) for t in targets]
    for m in maps:
        assert m.dtype == np.float32
        assert (m >= 0).all()
        np.testing.assert_allclose(m.max(axis=(1, 2)), 1.0, atol=1e-6)


def test_cam_selects_classes_in_order(cam_model: CamClassifier, images: torch.Tensor) -> None:
    image = images[0]
    with torch.no_grad():
        features = cam_model.features(image[None])[0]
        direct = torch.einsum("ck,khw->chw", cam_model.head.weight, features).clamp_min(0)
    expected = finish(direct)
    (maps,) = class_activation_maps(cam_model, image[None], [[2, 0]])
    np.testing.assert_allclose(maps, expected[[2, 0]], atol=ATOL)


def test_all_zero_map_stays_zero(cam_model: CamClassifier, images: torch.Tensor) -> None:
    with torch.no_grad():
        cam_model.head.weight[1] = 0.0
    (maps,) = class_activation_maps(cam_model, images[:1], [[1, 2]])
    assert not np.isnan(maps).any()
    assert (maps[0] == 0).all()
    assert maps[1].max() == pytest.approx(1.0)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_empty_targets(cam_model: CamClassifier, images: torch.Tensor, method: str) -> None:
    maps = class_activation_maps(cam_model, images[:2], [[], [3]], method=method)
    assert maps[0].shape == (0, SIZE, SIZE) and maps[0].dtype == np.float32
    assert maps[1].shape == (1, SIZE, SIZE)
    none = class_activation_maps(cam_model, images[:2], [[], []], method=method)
    assert [m.shape for m in none] == [(0, SIZE, SIZE)] * 2


def test_gradcam_equals_cam_for_gap_linear(
    resnet_cam_model: CamClassifier, images: torch.Tensor
) -> None:
    targets = [[2, 0], [4], [1, 3]]
    cam = class_activation_maps(resnet_cam_model, images, targets, method="cam")
    gradcam = class_activation_maps(resnet_cam_model, images, targets, method="gradcam")
    for a, b in zip(cam, gradcam, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_cam_on_torchvision_resnet_matches_gradcam(
    resnet18: nn.Module, images: torch.Tensor
) -> None:
    targets = [[0, 3], [1], [4, 2]]
    kwargs = {"target_layer": "layer4"}
    cam = class_activation_maps(resnet18, images, targets, method="cam", **kwargs)
    gradcam = class_activation_maps(resnet18, images, targets, method="gradcam", **kwargs)
    for a, b in zip(cam, gradcam, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_cam_needs_gap_linear_head(maxpool_net: MaxPoolNet, cam_model: CamClassifier) -> None:
    image = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"global average pooling.*gradcam"):
        class_activation_maps(maxpool_net, image, [[0]], method="cam", target_layer="target")
    # Not the layer the head pools: the head's weights do not apply there either.
    with pytest.raises(ValueError, match="gradcam"):
        class_activation_maps(cam_model, image.float(), [[0]], "cam", target_layer="features.3")


# --------------------------------------------------------------------------- gradient methods


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradient_methods_match_reference_on_non_gap_model(
    maxpool_net: MaxPoolNet, images: torch.Tensor, method: str
) -> None:
    targets = [[2, 0, 4], [1], [3, 2]]
    images = images.double()
    maps = class_activation_maps(maxpool_net, images, targets, method, target_layer="target")
    for image, classes, got in zip(images, targets, maps, strict=True):
        expected = finish(reference_raw(maxpool_net, "target", image, classes, method))
        np.testing.assert_allclose(got, expected, atol=ATOL)
    # Every map is non-trivial, so the comparison above means something.
    for got in maps:
        np.testing.assert_allclose(got.max(axis=(1, 2)), 1.0, atol=1e-6)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradient_methods_match_reference_on_torchvision_resnet(
    resnet18: nn.Module, images: torch.Tensor, method: str
) -> None:
    targets = [[0, 3], [1, 4, 2], [2]]
    maps = class_activation_maps(resnet18, images, targets, method, target_layer="layer4")
    for image, classes, got in zip(images, targets, maps, strict=True):
        expected = finish(reference_raw(resnet18, "layer4", image, classes, method))
        np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_inplace_op_after_target_layer(images: torch.Tensor, method: str) -> None:
    torch.manual_seed(4)
    plain = MaxPoolNet(inplace=False).eval()
    inplace = MaxPoolNet(inplace=True).eval()
    inplace.load_state_dict(plain.state_dict())
    targets = [[1, 2], [0], [4]]
    a = class_activation_maps(plain, images, targets, method, target_layer="target")
    b = class_activation_maps(inplace, images, targets, method, target_layer="target")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize("method", ("cam", *GRADIENT_METHODS))
def test_batch_independence(cam_model: CamClassifier, images: torch.Tensor, method: str) -> None:
    cam_model.train()  # BatchNorm in train mode would mix images: extraction must use eval
    (alone,) = class_activation_maps(cam_model, images[1:2], [[2, 0, 3]], method)
    batched = class_activation_maps(cam_model, images, [[1], [2, 0, 3], []], method)
    np.testing.assert_allclose(batched[1], alone, atol=ATOL)
    assert cam_model.training


def test_one_forward_per_scale(cam_model: CamClassifier, images: torch.Tensor) -> None:
    calls = []
    original = cam_model.forward

    def counting_forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return original(x)

    cam_model.forward = counting_forward  # type: ignore[method-assign]
    targets = [[0, 1, 2], [3, 4, 0], [1]]
    class_activation_maps(cam_model, images, targets, "gradcampp", scales=(1.0, 0.5), flip=True)
    assert calls == [6, 6]  # one pass per scale; flipped copies ride in the batch


def test_deterministic(maxpool_net: MaxPoolNet, images: torch.Tensor) -> None:
    args = (maxpool_net, images.double(), [[0, 1], [2], [3]], "gradcampp", "target")
    for a, b in zip(class_activation_maps(*args), class_activation_maps(*args), strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- scales and flips


def _manual_multiscale(
    model: nn.Module,
    layer: str,
    image: torch.Tensor,
    classes: list[int],
    method: str,
    scales: Sequence[float],
) -> np.ndarray:
    total = torch.zeros(len(classes), SIZE, SIZE)
    for scale in scales:
        size = round(SIZE * scale)
        scaled = F.interpolate(image[None], size=(size, size), **BILINEAR)[0]
        raw = reference_raw(model, layer, scaled, classes, method)
        raw = raw + reference_raw(model, layer, scaled.flip(-1), classes, method).flip(-1)
        total += F.interpolate(raw[None], size=(SIZE, SIZE), **BILINEAR)[0]
    peak = total.amax(dim=(1, 2), keepdim=True)
    return (total / torch.where(peak > 0, peak, 1.0)).numpy()


@pytest.mark.parametrize("scales", [(1.0,), (1.0, 0.5, 1.5)])
@pytest.mark.parametrize("method", ("cam", *GRADIENT_METHODS))
def test_scales_and_flip_match_manual_aggregation(
    cam_model: CamClassifier,
    maxpool_net: MaxPoolNet,
    images: torch.Tensor,
    method: str,
    scales: tuple[float, ...],
) -> None:
    model, layer = (cam_model, "features") if method == "cam" else (maxpool_net, "target")
    images = images.to(next(model.parameters()).dtype)
    targets = [[3, 1], [0]]
    maps = class_activation_maps(model, images[:2], targets, method, layer, scales, flip=True)
    for image, classes, got in zip(images[:2], targets, maps, strict=True):
        assert got.shape == (len(classes), SIZE, SIZE)
        np.testing.assert_allclose(got.max(axis=(1, 2)), 1.0, atol=1e-6)
        expected = _manual_multiscale(model, layer, image, classes, method, scales)
        np.testing.assert_allclose(got, expected, atol=ATOL)


def test_flip_of_mirrored_image_mirrors_maps(cam_model: CamClassifier) -> None:
    image = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    (maps,) = class_activation_maps(cam_model, image, [[0, 2]], flip=True)
    (mirrored,) = class_activation_maps(cam_model, image.flip(-1), [[0, 2]], flip=True)
    np.testing.assert_allclose(mirrored, maps[:, :, ::-1], atol=ATOL)


# --------------------------------------------------------------------------- side effects


@pytest.mark.parametrize("method", ("cam", *GRADIENT_METHODS))
def test_no_side_effects_on_model(
    cam_model: CamClassifier, images: torch.Tensor, method: str
) -> None:
    cam_model.train()
    cam_model.features[1].eval()  # a frozen BatchNorm: mixed modes must survive
    cam_model.features[0].weight.requires_grad_(False)
    class_activation_maps(cam_model, images, [[0], [1, 2], [3]], method, scales=(1.0, 0.5))
    assert all(p.grad is None for p in cam_model.parameters())
    assert not cam_model.features[0].weight.requires_grad
    assert all(p.requires_grad for n, p in cam_model.named_parameters() if n != "features.0.weight")
    assert cam_model.training and not cam_model.features[1].training
    assert cam_model.features[4].training and cam_model.features[3].training
    assert_no_hooks(cam_model)


@pytest.mark.parametrize("method", ("cam", *GRADIENT_METHODS))
def test_cleanup_after_exception_in_forward(images: torch.Tensor, method: str) -> None:
    torch.manual_seed(6)
    model = tiny_cam_classifier()
    model.head = ExplodingLinear(16, NUM_CLASSES)
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        class_activation_maps(model, images, [[0], [1], [2]], method)
    assert_no_hooks(model)
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_cleanup_when_class_out_of_range(resnet18: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="out of range"):
        class_activation_maps(resnet18, images, [[0], [NUM_CLASSES], [1]], "gradcam", "layer4")
    assert_no_hooks(resnet18)
    assert not resnet18.training


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_works_inside_inference_mode(
    cam_model: CamClassifier, images: torch.Tensor, method: str
) -> None:
    targets = [[0, 1], [2], [3]]
    expected = class_activation_maps(cam_model, images, targets, method)
    with torch.inference_mode():
        got = class_activation_maps(cam_model, images.clone(), targets, method)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ("cam", *GRADIENT_METHODS))
def test_cuda_matches_cpu(cam_model: CamClassifier, images: torch.Tensor, method: str) -> None:
    targets = [[0, 1], [2], [3, 4]]
    cpu = class_activation_maps(cam_model, images, targets, method, scales=(1.0, 0.5), flip=True)
    cuda = class_activation_maps(
        cam_model.cuda(), images.cuda(), targets, method, scales=(1.0, 0.5), flip=True
    )
    for a, b in zip(cpu, cuda, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("images_shape", "targets", "kwargs", "message"),
    [
        ((3, SIZE, SIZE), [[0]], {}, "images must be a tensor"),
        ((2, 3, SIZE, SIZE), [[0]], {}, "one class list per image"),
        ((1, 3, SIZE, SIZE), [[NUM_CLASSES]], {}, "out of range"),
        ((1, 3, SIZE, SIZE), [[-1]], {}, "negative"),
        ((1, 3, SIZE, SIZE), [[1.5]], {}, "integer class ids"),
        ((1, 3, SIZE, SIZE), [[0]], {"method": "scorecam"}, "unknown CAM method"),
        ((1, 3, SIZE, SIZE), [[0]], {"scales": ()}, "scales"),
        ((1, 3, SIZE, SIZE), [[0]], {"scales": (1.0, 0.0)}, "scales"),
        ((1, 3, SIZE, SIZE), [[0]], {"target_layer": "nope"}, "not a submodule"),
    ],
)
def test_validation_errors(
    cam_model: CamClassifier,
    images_shape: tuple[int, ...],
    targets: list[list[int]],
    kwargs: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        class_activation_maps(cam_model, torch.zeros(images_shape), targets, **kwargs)


def test_target_layer_that_runs_twice(resnet18: nn.Module, images: torch.Tensor) -> None:
    # A BasicBlock calls its single ReLU module twice: its "output" is ambiguous.
    with pytest.raises(ValueError, match="more than once"):
        class_activation_maps(resnet18, images, [[0], [1], [2]], "gradcam", "layer4.1.relu")
    assert_no_hooks(resnet18)


def test_missing_default_target_layer(maxpool_net: MaxPoolNet) -> None:
    with pytest.raises(ValueError, match="target_layer"):
        class_activation_maps(maxpool_net, torch.zeros(1, 3, SIZE, SIZE).double(), [[0]], "gradcam")


def test_the_scales_of_before_2026_12_08_keep_every_stage_hash() -> None:
    """0.75 joined the default scales on 2026-12-08; a workspace that sets the scales of
    before keeps every map it made, and the new default recomputes from the cam stage on."""
    earlier = PipelineConfig.model_validate({"cam": {"scales": EARLIER_CAM_SCALES}})
    assert {stage: stage_config_hash(earlier, stage) for stage in STAGES} == EARLIER_HASHES
    changed = {
        stage
        for stage in STAGES
        if stage_config_hash(PipelineConfig(), stage) != EARLIER_HASHES[stage]
    }
    assert changed == set(STAGES) - {"train"}
