"""Class activation maps: CAM, Grad-CAM and Grad-CAM++, batched, multi-scale + flip.

Methods (all produce one map per requested class, weighted sums of the target
layer's feature maps ``A`` of shape ``[K, h, w]``):

- ``"cam"``: Zhou et al., "Learning Deep Features for Discriminative
  Localization", CVPR 2016. ``CAM_c = sum_k W[c, k] A_k`` with ``W`` the linear
  layer that follows global average pooling. No backward pass.
- ``"gradcam"``: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
  Networks via Gradient-based Localization", ICCV 2017. Channel weights are the
  spatial mean of ``d y_c / d A_k``.
- ``"gradcampp"``: Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based
  Visual Explanations for Deep Convolutional Networks", WACV 2018. The
  exp-free closed form used by pytorch-grad-cam:
  ``alpha = g^2 / (2 g^2 + sum_ij(A) g^3)``, weights ``sum_ij alpha relu(g)``.

Speed: one forward pass per batch and scale serves every target of every image
(the flipped copies ride in the same batch). Gradient methods re-root autograd
at the target layer's output, with the parameters frozen for the call, so the
trunk before it runs without building a graph and the backward walks only the
tail after it. Images' scores are independent, so one backward per *target
slot* (the j-th target of every image at once) gives all images' gradients:
``max(len(t) for t in targets)`` backward passes in all.

Multi-scale + flip follows IRN (Ahn et al., CVPR 2019): per scale, ReLU the
maps, add the un-flipped maps of the flipped input, upsample bilinearly to the
input size, sum over scales, then divide each map by its own maximum.

Stochastic selection (``stochastic``, method ``"cam"`` only): each scale's and
flip's map is instead the mean of many head passes over the cached features,
each keeping a random subset of hidden units (:mod:`wsss_core.stochastic_cam`).

Cross-image affinity (``cross_image``, method ``"cam"`` with a linear head, no
stochastic selection): before the head, each scale's and flip's features of an
image take the attention message from its partners' features
(:mod:`wsss_core.cross_image`); an image without partners is left as it is.

An MDC classifier (:class:`~wsss_core.model.classifier.MultiDilationClassifier`,
method ``"cam"`` only, no stochastic selection): each scale's and flip's map is
its head's ``H_1 + mean(H_d, d > 1)`` over the backbone features
(:mod:`wsss_core.model.multi_dilation`), then ReLU'd like a plain CAM.

An online-erasing classifier (:class:`~wsss_core.model.classifier.OnlineErasingClassifier`,
ACoL; method ``"cam"`` only, no stochastic selection): each scale's and flip's map
is the element-wise max of its two heads' normalised maps, the second head's
over the features its first head's high maps of the image's targets erase
(:mod:`wsss_core.model.online_erasing`).

An iterative-erasing classifier (AE-PSL,
:class:`~wsss_core.model.iterative_erasing.ErasingRoundsClassifier`): each
round's maps, with every setting above, on the images the earlier rounds
erased in turn; the map is their union, the element-wise max.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss_core.cross_image import CrossImageAffinity, Partners, refined
from wsss_core.model.classifier import MultiDilationClassifier, OnlineErasingClassifier
from wsss_core.model.iterative_erasing import ErasingRoundsClassifier, erasing_rounds, union
from wsss_core.model.multi_dilation import MultiDilationHead
from wsss_core.model.online_erasing import OnlineErasingHead
from wsss_core.stochastic_cam import StochasticSelection, image_generators, stochastic_maps

__all__ = ["METHODS", "Method", "class_activation_maps", "last_features"]

Method = Literal["cam", "gradcam", "gradcampp"]
METHODS: tuple[str, ...] = ("cam", "gradcam", "gradcampp")

# Same epsilon as pytorch-grad-cam's Grad-CAM++ so results are comparable.
_GRADCAMPP_EPS = 1e-6


def class_activation_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Sequence[int]],
    method: Method = "cam",
    target_layer: str | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    stochastic: StochasticSelection | None = None,
    seeds: Sequence[int] | None = None,
    cross_image: CrossImageAffinity | None = None,
    partners: Sequence[Partners] | None = None,
) -> list[np.ndarray]:
    """Normalised class activation maps for the given classes of each image.

    Args:
        model: a CNN classifier returning logits ``[B, C]``. It runs in eval mode
            for the call; its training flags and ``requires_grad`` flags are
            restored afterwards and no parameter ever gets a ``.grad``. (The
            flags change during the call: do not train the same model
            concurrently in another thread.)
        images: normalised float tensor ``[B, 3, H, W]`` on the model's device.
        targets: one sequence of class ids per image (may be empty).
        method: ``"cam"``, ``"gradcam"`` or ``"gradcampp"`` (see module docs).
        target_layer: name for ``model.get_submodule``; defaults to
            ``model.cam_layer_name`` when the model defines it.
        scales: input rescaling factors whose maps are summed (IRN style).
        flip: also use horizontally flipped inputs (maps un-flipped and summed).
        stochastic: random hidden-unit selection, many head passes per scale and
            flip averaged (method ``"cam"`` only; see :mod:`wsss_core.stochastic_cam`).
        seeds: with ``stochastic``, one generator seed per image
            (``stochastic_cam.image_seed``), so an image's maps do not depend on its
            batch mates.
        cross_image: refine each image's features by attention to ``partners``
            before the head (method ``"cam"``, a linear head, no ``stochastic``;
            see :mod:`wsss_core.cross_image`).
        partners: with ``cross_image``, one :class:`Partners` per image (none:
            the image's features stay as they are).

    Returns:
        Item ``i`` is a float32 array ``[len(targets[i]), H, W]``, maps in the
        order of ``targets[i]``, non-negative, each divided by its own maximum
        (all-zero maps stay zero).
    """
    class_lists = _validate(images, targets, method, scales)
    if isinstance(model, ErasingRoundsClassifier):  # each round on its erased images: the union
        return _union_of_rounds(
            model,
            images,
            class_lists,
            method=method,
            target_layer=target_layer,
            scales=scales,
            flip=flip,
            stochastic=stochastic,
            seeds=seeds,
        )
    _check_multi_dilation(model, method, target_layer, stochastic)
    generators = _stochastic_generators(stochastic, seeds, method, len(class_lists))
    layer_name, layer = _resolve_layer(model, target_layer)
    head = _cam_head(model, layer_name) if method == "cam" else None
    _check_cross_image(head, stochastic, cross_image, partners, len(class_lists))
    attention = (cross_image, tuple(partners)) if cross_image is not None and partners else None
    batch, _, height, width = images.shape
    counts = [len(c) for c in class_lists]
    if sum(counts) == 0:
        return [np.zeros((0, height, width), np.float32) for _ in range(batch)]

    slots = _TargetSlots.build(class_lists, images.device)
    total: torch.Tensor | None = None
    # inference_mode(False): gradient methods must also work for callers in inference mode.
    with _eval_mode(model), _frozen_parameters(model), torch.inference_mode(False):
        for scale in scales:
            scaled = _rescale(images, scale)
            raw = _raw_maps(
                model, layer, head, scaled, slots, method, flip, stochastic, generators, attention
            )
            raw = F.interpolate(
                raw[None], size=(height, width), mode="bilinear", align_corners=False
            )[0]
            total = raw if total is None else total + raw
    assert total is not None  # scales is non-empty
    maps = _normalise(total).float().cpu()
    return [chunk.numpy() for chunk in torch.split(maps, counts)]


def _union_of_rounds(
    model: ErasingRoundsClassifier,
    images: torch.Tensor,
    class_lists: list[list[int]],
    **settings: object,
) -> list[np.ndarray]:
    """Iterative erasing: every round's maps, on the images the rounds before it erased."""

    def maps_of(round_model: nn.Module, batch: torch.Tensor, classes) -> list[torch.Tensor]:
        maps = class_activation_maps(round_model, batch, classes, **settings)  # type: ignore[arg-type]
        return [torch.from_numpy(m) for m in maps]

    per_round, _ = erasing_rounds(model.rounds, images, class_lists, model.threshold, maps_of)
    return [maps.numpy() for maps in union(per_round)]


# --------------------------------------------------------------------------- validation


def _validate(
    images: torch.Tensor,
    targets: Sequence[Sequence[int]],
    method: str,
    scales: Sequence[float],
) -> list[list[int]]:
    """Check arguments cheaply before any forward pass; return targets as int lists."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of: {', '.join(METHODS)}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"images must be a tensor [B, 3, H, W], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor, got {images.dtype}")
    if len(targets) != images.shape[0]:
        raise ValueError(
            f"targets must hold one class list per image: got {len(targets)} lists "
            f"for {images.shape[0]} images"
        )
    if len(scales) == 0 or any(not float(s) > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales}")
    class_lists: list[list[int]] = []
    for i, classes in enumerate(targets):
        try:
            ids = [operator.index(c) for c in classes]
        except TypeError as err:
            raise ValueError(f"targets[{i}] must hold integer class ids: {classes!r}") from err
        if any(c < 0 for c in ids):
            raise ValueError(f"targets[{i}] has a negative class id: {ids}")
        class_lists.append(ids)
    return class_lists


def _stochastic_generators(
    stochastic: StochasticSelection | None,
    seeds: Sequence[int] | None,
    method: str,
    batch: int,
) -> list[torch.Generator]:
    """One generator per image for stochastic selection (none without it)."""
    if stochastic is None:
        return []
    if method != "cam":
        raise ValueError(
            f"stochastic selection runs the linear head over cached features: method must be "
            f"'cam', got {method!r}"
        )
    if seeds is None or len(seeds) != batch:
        got = "none" if seeds is None else len(seeds)
        raise ValueError(f"stochastic selection needs one seed per image: {batch} images, {got}")
    return image_generators(seeds)


def _check_multi_dilation(
    model: nn.Module,
    method: str,
    target_layer: str | None,
    stochastic: StochasticSelection | None,
) -> None:
    """The MDC head's maps are its branches' CAMs over ``features``: nothing else applies.

    The same for online erasing's two heads (ACoL), whose maps are fused from both.
    """
    if isinstance(model, OnlineErasingClassifier):
        if method != "cam":
            raise ValueError(
                f"an online-erasing classifier's maps are its two heads' CAMs fused by max: "
                f"method must be 'cam', got {method!r}"
            )
        if target_layer not in (None, model.cam_layer_name):
            raise ValueError(
                f"an online-erasing classifier's CAMs start from {model.cam_layer_name!r}, "
                f"not {target_layer!r}"
            )
        if stochastic is not None:
            raise ValueError(
                "stochastic selection needs one linear head; an online-erasing classifier has two"
            )
        return
    if not isinstance(model, MultiDilationClassifier):
        return
    if method != "cam":
        raise ValueError(
            f"an MDC classifier's maps are its branches' CAMs: method must be 'cam', got "
            f"{method!r} (Grad-CAM at the branches, combined the same way, gives the same "
            "normalised maps)"
        )
    if target_layer not in (None, model.cam_layer_name):
        raise ValueError(
            f"an MDC classifier's CAMs start from {model.cam_layer_name!r}, not {target_layer!r}"
        )
    if stochastic is not None:
        raise ValueError("stochastic selection needs a linear head; an MDC classifier has none")


def _check_cross_image(
    head: nn.Module | None,
    stochastic: StochasticSelection | None,
    cross_image: CrossImageAffinity | None,
    partners: Sequence[Partners] | None,
    batch: int,
) -> None:
    """Cross-image affinity refines the features that a linear CAM head reads."""
    if cross_image is None:
        return
    if not isinstance(head, nn.Linear) or stochastic is not None:
        raise ValueError(
            "cross-image affinity refines the features before the linear CAM head: it needs "
            "method 'cam', a classifier with one linear head (not MDC or online erasing) and "
            "no stochastic selection"
        )
    if partners is None or len(partners) != batch:
        got = "none" if partners is None else len(partners)
        raise ValueError(
            f"cross-image affinity needs one Partners per image: {batch} images, {got}"
        )


def last_features(
    model: nn.Module, images: torch.Tensor, target_layer: str | None = None
) -> torch.Tensor:
    """The CAM layer's features ``[B, K, h, w]`` of ``images``, in eval mode, no autograd."""
    _, layer = _resolve_layer(model, target_layer)
    with _eval_mode(model), torch.no_grad():
        _, activation = _forward(model, layer, images, reroot=False)
    return activation


def _check_class_range(slots: _TargetSlots, num_classes: int) -> None:
    top = int(slots.classes.max())
    if top >= num_classes:
        raise ValueError(f"class id {top} out of range: the model predicts {num_classes} classes")


# --------------------------------------------------------------------------- model plumbing


def _resolve_layer(model: nn.Module, target_layer: str | None) -> tuple[str, nn.Module]:
    name = target_layer if target_layer is not None else getattr(model, "cam_layer_name", None)
    if name is None:
        raise ValueError(
            f"{type(model).__name__} has no default CAM layer (cam_layer_name): pass "
            "target_layer, e.g. target_layer='layer4' for torchvision ResNets"
        )
    try:
        return name, model.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f"target_layer {name!r} is not a submodule of the model: {err}") from err


def _cam_head(
    model: nn.Module, layer_name: str
) -> nn.Linear | MultiDilationHead | OnlineErasingHead:
    """What turns ``layer_name``'s features into CAMs: a linear, an MDC or an erasing head."""
    if isinstance(model, MultiDilationClassifier | OnlineErasingClassifier):
        return model.head
    return _linear_head(model, layer_name)


def _linear_head(model: nn.Module, layer_name: str) -> nn.Linear:
    """The linear layer that directly follows global average pooling of ``layer_name``.

    Known shapes: a ``CamClassifier`` (``cam_layer_name`` -> GAP -> ``head``) and a
    torchvision ResNet (``layer4`` -> ``avgpool`` -> ``fc``).
    """
    head = getattr(model, "head", None)
    if getattr(model, "cam_layer_name", None) == layer_name and isinstance(head, nn.Linear):
        return head
    fc, pool = getattr(model, "fc", None), getattr(model, "avgpool", None)
    gap = isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
    if layer_name == "layer4" and gap and isinstance(fc, nn.Linear):
        return fc
    raise ValueError(
        f"method='cam' needs target layer -> global average pooling -> linear, and no such "
        f"head follows {layer_name!r} in {type(model).__name__}; use method='gradcam' "
        "(or 'gradcampp'), which works for any CNN"
    )


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the call; restore each module's own flag (mixed modes survive)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad: the trunk then builds no graph and the
    backward computes no weight gradients (and nothing lands in ``.grad``)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)


@dataclass
class _Capture:
    activation: torch.Tensor | None = None


@contextmanager
def _capture_activation(layer: nn.Module, reroot: bool) -> Iterator[_Capture]:
    """Record ``layer``'s output during one forward pass; the hook is always removed.

    With ``reroot`` the output is swapped for a fresh leaf that requires grad,
    so autograd starts at the target layer and gradients w.r.t. it are cheap.
    """
    capture = _Capture()

    def hook(_module: nn.Module, _inputs: object, output: object) -> torch.Tensor | None:
        if capture.activation is not None:
            raise ValueError(
                "the target layer ran more than once in one forward pass (a shared "
                "module?): choose a layer that runs once"
            )
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise ValueError("the target layer must output a feature tensor [B, K, h, w]")
        if not reroot:
            capture.activation = output.detach()
            return None
        capture.activation = output.detach().requires_grad_(True)
        # The clone keeps the leaf safe from in-place ops later in the model.
        return capture.activation.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


def _forward(
    model: nn.Module, layer: nn.Module, images: torch.Tensor, reroot: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[N, C]`` and the target layer activation ``[N, K, h, w]``."""
    grad_mode = torch.enable_grad() if reroot else torch.no_grad()
    with grad_mode, _capture_activation(layer, reroot) as capture:
        scores = model(images)
    if capture.activation is None:
        raise ValueError("the target layer did not run in the model's forward pass")
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError("the model must return class scores as a tensor [B, C]")
    if reroot and not scores.requires_grad:
        raise ValueError("the model's scores do not depend on the target layer's output")
    return scores, capture.activation


# --------------------------------------------------------------------------- maps


@dataclass(frozen=True)
class _TargetSlots:
    """Targets as a padded ``[B, S]`` grid: slot j holds each image's j-th class."""

    classes: torch.Tensor  # long [B, S], padding 0
    valid: torch.Tensor  # bool [B, S]

    @staticmethod
    def build(class_lists: list[list[int]], device: torch.device) -> _TargetSlots:
        width = max(len(c) for c in class_lists)
        classes = torch.zeros(len(class_lists), width, dtype=torch.long)
        valid = torch.zeros(len(class_lists), width, dtype=torch.bool)
        for i, ids in enumerate(class_lists):
            classes[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            valid[i, : len(ids)] = True
        return _TargetSlots(classes.to(device), valid.to(device))

    def repeated(self, times: int) -> _TargetSlots:
        """The same targets for a batch stacked ``times`` over (flipped copies)."""
        return _TargetSlots(self.classes.repeat(times, 1), self.valid.repeat(times, 1))


def _rescale(images: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return images
    height, width = images.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _raw_maps(
    model: nn.Module,
    layer: nn.Module,
    head: nn.Linear | MultiDilationHead | OnlineErasingHead | None,
    images: torch.Tensor,
    slots: _TargetSlots,
    method: str,
    flip: bool,
    stochastic: StochasticSelection | None = None,
    generators: Sequence[torch.Generator] = (),
    attention: tuple[CrossImageAffinity, tuple[Partners, ...]] | None = None,
) -> torch.Tensor:
    """ReLU'd maps ``[T, h, w]`` at feature resolution, image-major target order.

    With ``flip`` the flipped images join the same forward pass and their
    un-flipped maps are added to the originals'. With ``stochastic`` each map
    is the mean of that many normalised head passes over the same features.
    With ``attention`` each image's features (its flipped copy's too) first
    take the message from its partners.
    """
    batch = images.shape[0]
    if flip:
        images = torch.cat([images, images.flip(-1)])
        slots = slots.repeated(2)
    if images.device.type == "cpu":
        # oneDNN convolutions run 20-30% faster on channels-last inputs (ResNet-50,
        # MobileNetV2, measured on this project's CPUs); the model is left as it is.
        images = images.contiguous(memory_format=torch.channels_last)
    if isinstance(head, MultiDilationHead):
        _check_class_range(slots, head.num_classes)
        with torch.no_grad():  # the features once, each branch once: no forward for scores
            maps = head.class_maps(layer(images), slots.classes).relu()
        return _unflipped(maps, slots, batch, flip)
    if isinstance(head, OnlineErasingHead):
        _check_class_range(slots, head.num_classes)
        with torch.no_grad():  # each copy (flipped ones too) is erased by its own first map
            maps = head.class_maps(layer(images), slots.classes, slots.valid)
        return _unflipped(maps, slots, batch, flip)
    scores, activation = _forward(model, layer, images, reroot=method != "cam")
    _check_class_range(slots, scores.shape[1])
    if attention is not None:
        activation = _with_partners(activation.detach(), attention, batch)
    if method == "cam":
        assert head is not None
        weights = _cam_weights(head, slots, activation)
    else:
        weights = _gradient_weights(scores, activation, slots, plus=method == "gradcampp")
    if stochastic is not None:
        maps = _stochastic_batch(weights, activation.detach(), generators, stochastic)
    else:
        # [N, S, K] x [N, K, h*w] -> [N, S, h, w]: every target's map in one batched matmul.
        maps = torch.bmm(weights, activation.detach().flatten(2))
        maps = maps.unflatten(2, activation.shape[2:]).relu()
    return _unflipped(maps, slots, batch, flip)


def _with_partners(
    activation: torch.Tensor,
    attention: tuple[CrossImageAffinity, tuple[Partners, ...]],
    batch: int,
) -> torch.Tensor:
    """Each row refined on its own (row ``i + c * batch`` is copy ``c`` of image ``i``).

    The rows without partners stay as they are, in the same memory layout, so the
    head's product gives them bit-identical maps.
    """
    settings, partners = attention
    out = activation
    for row in range(activation.shape[0]):
        if len(partners[row % batch]):
            out = out.clone() if out is activation else out
            out[row] = refined(activation[row], partners[row % batch], settings)
    return out


def _unflipped(maps: torch.Tensor, slots: _TargetSlots, batch: int, flip: bool) -> torch.Tensor:
    """Maps ``[N, S, h, w]`` -> ``[T, h, w]``: flipped copies added back, padding dropped."""
    if flip:
        maps = maps[:batch] + maps[batch:].flip(-1)
        slots = _TargetSlots(slots.classes[:batch], slots.valid[:batch])
    return maps[slots.valid]


def _stochastic_batch(
    weights: torch.Tensor,
    activation: torch.Tensor,
    generators: Sequence[torch.Generator],
    selection: StochasticSelection,
) -> torch.Tensor:
    """Stochastic maps ``[N, S, h, w]``; row ``i + c * B`` is copy ``c`` (flip) of image ``i``.

    Each image's generator draws for its own copies, original first, so its maps
    depend on nothing but its seed and its features.
    """
    batch = len(generators)
    maps = torch.empty(
        (*weights.shape[:2], *activation.shape[2:]),
        dtype=activation.dtype,
        device=activation.device,
    )
    for index, generator in enumerate(generators):
        for row in range(index, activation.shape[0], batch):
            maps[row] = stochastic_maps(weights[row], activation[row], generator, selection)
    return maps


def _cam_weights(head: nn.Linear, slots: _TargetSlots, activation: torch.Tensor) -> torch.Tensor:
    """CAM channel weights ``[N, S, K]``: the head's rows for each target."""
    if head.in_features != activation.shape[1]:
        raise ValueError(
            f"the linear head expects {head.in_features} features but the target layer "
            f"outputs {activation.shape[1]} channels"
        )
    return head.weight.detach()[slots.classes].to(activation.dtype)


def _gradient_weights(
    scores: torch.Tensor, activation: torch.Tensor, slots: _TargetSlots, plus: bool
) -> torch.Tensor:
    """Grad-CAM / Grad-CAM++ channel weights ``[N, S, K]``, one backward per slot.

    Scores of different images do not interact (eval mode), so a one-hot
    ``grad_outputs`` picking each image's j-th class gives every image's
    gradient for slot j in a single vector-Jacobian product.
    """
    num_slots = slots.classes.shape[1]
    one_hot = F.one_hot(slots.classes, scores.shape[1]).to(scores.dtype)
    one_hot = one_hot * slots.valid[..., None]  # padding slots select nothing
    per_slot = []
    for j in range(num_slots):
        (grads,) = torch.autograd.grad(
            scores, activation, grad_outputs=one_hot[:, j], retain_graph=j < num_slots - 1
        )
        per_slot.append(_gradcampp_weights(grads, activation) if plus else grads.mean((2, 3)))
    return torch.stack(per_slot, dim=1)


def _gradcampp_weights(grads: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ weights ``[N, K]`` (Chattopadhay et al. 2018, eq. 19, exp-free form)."""
    grads_2 = grads.square()
    grads_3 = grads_2 * grads
    sum_activation = activation.detach().sum(dim=(2, 3), keepdim=True)
    alpha = grads_2 / (2 * grads_2 + sum_activation * grads_3 + _GRADCAMPP_EPS)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (alpha * grads.relu()).sum(dim=(2, 3))


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map ``[T, H, W]`` by its own maximum; all-zero maps stay zero."""
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return maps / torch.where(peak > 0, peak, torch.ones_like(peak))
