"""Online adversarial erasing, ACoL (wsss_core/model/online_erasing.py,
train.online_erasing_threshold)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from tiny_models import (
    DEFAULT_HASHES,
    NUM_CLASSES,
    STAGES,
    TARGETS,
    assert_cuda_maps_match_cpu,
    multi_hot,
    tiny_features,
    tiny_images,
)

from wsss_core.cam import class_activation_maps
from wsss_core.config import ConfigError, PipelineConfig, TrainConfig, validated_config
from wsss_core.config import stage_config_hash as config_hash
from wsss_core.config_yaml import commented_yaml
from wsss_core.model.checkpoint import load_checkpoint, save_checkpoint
from wsss_core.model.classifier import OnlineErasingClassifier, build_classifier, classifier_for
from wsss_core.model.online_erasing import label_slots
from wsss_core.model.run_files import requested_config
from wsss_core.stochastic_cam import StochasticSelection

THRESHOLD = 0.6


@pytest.fixture(scope="module")
def model() -> OnlineErasingClassifier:
    """conv-BN-ReLU x 2 (16 channels, stride 4), then the two heads: 16 x 16 cells at 64 px."""
    features = tiny_features()
    return OnlineErasingClassifier(features, 16, NUM_CLASSES, THRESHOLD).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return tiny_images()


def _normalised(maps: torch.Tensor) -> torch.Tensor:
    maps = maps.relu()
    return maps / maps.amax(dim=(-2, -1), keepdim=True)


def _by_hand(model: OnlineErasingClassifier, images: torch.Tensor):
    """Features, the erased cells and both heads' normalised CAMs of every class, with einsum."""
    with torch.no_grad():
        features = model.features(images)
        first = _normalised(torch.einsum("ck,bkhw->bchw", model.head.first.weight, features))
        high = torch.zeros(features.shape[0], *features.shape[2:], dtype=torch.bool)
        for i, classes in enumerate(TARGETS):
            high[i] = (first[i, classes] >= THRESHOLD).any(dim=0)
        erased = features.clone()
        erased.permute(0, 2, 3, 1)[high] = 0.0
        second = _normalised(torch.einsum("ck,bkhw->bchw", model.head.second.weight, erased))
    return features, high, erased, first, second


def test_the_erased_cells_are_exactly_zero_in_the_second_heads_input(model, images):
    features, high, erased_by_hand, _, _ = _by_hand(model, images)
    assert 0 < high.sum() < high.numel() / 2  # some cells erased, most kept
    seen: list[torch.Tensor] = []
    handle = model.head.second.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    try:
        with torch.no_grad():
            first_logits, second_logits = model.training_logits(images, multi_hot(TARGETS))
            classes, valid = label_slots(multi_hot(TARGETS))
            erased = model.head.erased(features, classes, valid)
    finally:
        handle.remove()
    cells = erased.permute(0, 2, 3, 1)  # [B, h, w, K]
    assert torch.all(cells[high] == 0)
    torch.testing.assert_close(cells[~high], features.permute(0, 2, 3, 1)[~high], rtol=0, atol=0)
    torch.testing.assert_close(erased, erased_by_hand, rtol=0, atol=0)
    # Head B pooled exactly those erased features; head A saw them whole.
    torch.testing.assert_close(seen[0], erased_by_hand.mean(dim=(2, 3)))
    torch.testing.assert_close(first_logits, model.head.first(features.mean(dim=(2, 3))))
    torch.testing.assert_close(second_logits, model.head.second(seen[0]))
    # The score the classifier reports is head A's.
    with torch.no_grad():
        torch.testing.assert_close(model(images), first_logits)


def test_the_cam_is_the_max_of_the_two_heads_normalised_maps(model, images):
    _, _, _, first, second = _by_hand(model, images)
    fused = F.interpolate(
        torch.maximum(first, second), size=(64, 64), mode="bilinear", align_corners=False
    )
    maps = class_activation_maps(model, images, TARGETS)
    for i, classes in enumerate(TARGETS):
        expected = fused[i, classes] / fused[i, classes].amax(dim=(1, 2), keepdim=True)
        np.testing.assert_allclose(maps[i], expected.numpy(), atol=1e-5)
    # Head A alone is not the map: the erased head adds to it.
    alone = F.interpolate(first, size=(64, 64), mode="bilinear", align_corners=False)
    assert np.abs(maps[0] - alone[0, TARGETS[0]].numpy()).mean() > 1e-3


def test_label_slots_list_each_images_classes():
    classes, valid = label_slots(multi_hot(TARGETS))
    assert [classes[i][valid[i]].tolist() for i in range(3)] == [[0, 2], [1], [0, 3]]


def test_flip_and_scales_apply_to_the_fused_map(model, images):
    maps = class_activation_maps(model, images, TARGETS, scales=(1.0, 0.5), flip=True)
    mirrored = class_activation_maps(model, images.flip(-1), TARGETS, scales=(1.0, 0.5), flip=True)
    for a, b in zip(maps, mirrored, strict=True):
        np.testing.assert_allclose(b, a[..., ::-1], atol=1e-5)
        assert a.min() >= 0 and np.allclose(a.max(axis=(1, 2)), 1.0)


def test_training_sums_both_heads_losses_and_trains_both():
    from wsss_core.model import training

    config = TrainConfig(
        backbone="resnet18", weights=None, epochs=1, image_size=64, online_erasing_threshold=0.6
    )
    device = torch.device("cpu")
    run = training.build_run(config, NUM_CLASSES, 1, device, False, print, initial_weights=False)
    assert isinstance(run.model, OnlineErasingClassifier)
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, 64, 64, generator=generator)
    targets = multi_hot([[0], [1, 3], [2], [0, 1]])
    before = copy.deepcopy(run.model).train()
    with torch.no_grad():
        expected = sum(
            F.binary_cross_entropy_with_logits(logits, targets)
            for logits in before.training_logits(images, targets)
        )
    loss = training._train_one_epoch(run, [(images, targets)], device, False, 1, 1, None)
    assert loss == pytest.approx(float(expected), rel=1e-5)
    for name in ("first", "second"):
        old, new = getattr(before.head, name), getattr(run.model.head, name)
        assert not torch.equal(old.weight, new.weight), name


def test_a_checkpoint_reloads_into_the_same_architecture_with_the_same_cams(images, tmp_path):
    path = tmp_path / "classifier.pt"
    config = TrainConfig(
        backbone="resnet18", online_erasing_threshold=0.5, image_size=64
    ).model_dump(mode="json")
    trained = build_classifier("resnet18", NUM_CLASSES, 16, erasing_threshold=0.5).eval()
    with torch.no_grad():  # weights of their own, not a fresh build's
        for parameter in trained.head.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    save_checkpoint(path, trained, names, config, {"val_map": 0.5}, {"config_hash": "x"})
    loaded = load_checkpoint(path, class_names=names)
    assert isinstance(loaded.model, OnlineErasingClassifier)
    assert loaded.model.head.threshold == 0.5
    before = class_activation_maps(trained, images, TARGETS, scales=(1.0, 0.5))
    after = class_activation_maps(loaded.model, images, TARGETS, scales=(1.0, 0.5))
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_switching_it_retrains_and_the_default_hashes_are_unchanged():
    default = PipelineConfig()
    assert {stage: config_hash(default, stage) for stage in STAGES} == DEFAULT_HASHES
    on = PipelineConfig.model_validate({"train": {"online_erasing_threshold": 0.6}})
    assert all(config_hash(on, stage) != DEFAULT_HASHES[stage] for stage in STAGES)
    other = PipelineConfig.model_validate({"train": {"online_erasing_threshold": 0.5}})
    assert config_hash(other, "train") != config_hash(on, "train")
    assert "online_erasing_threshold" not in requested_config(TrainConfig())
    assert requested_config(on.train)["online_erasing_threshold"] == 0.6
    plain = classifier_for(TrainConfig(backbone="resnet18").model_dump(mode="json"), 3)
    assert not isinstance(plain, OnlineErasingClassifier)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1])
def test_a_threshold_out_of_bounds_is_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match=r"^acol\.yaml: train\.online_erasing_threshold"):
        validated_config({"train": {"online_erasing_threshold": bad}}, "acol.yaml")


def test_gradient_methods_stochastic_passes_and_mdc_are_config_errors(model, images):
    on = {"online_erasing_threshold": 0.6}
    with pytest.raises(ValidationError, match="needs method cam, not gradcam"):
        PipelineConfig.model_validate({"train": on, "cam": {"method": "gradcam"}})
    with pytest.raises(ValidationError, match="stochastic_passes"):
        PipelineConfig.model_validate({"train": on, "cam": {"stochastic_passes": 8}})
    with pytest.raises(ValidationError, match="set one of them off"):
        PipelineConfig.model_validate({"train": {**on, "multi_dilation": [1, 3]}})
    # The library refuses them too.
    with pytest.raises(ValueError, match="method must be 'cam'"):
        class_activation_maps(model, images, TARGETS, method="gradcampp")
    with pytest.raises(ValueError, match="has two"):
        selection = StochasticSelection(4, 0.5)
        class_activation_maps(model, images, TARGETS, stochastic=selection, seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="choose one"):
        build_classifier("resnet18", 3, 16, (1, 3), 8, erasing_threshold=0.6)


def test_config_show_says_what_it_does_and_its_cost():
    text = commented_yaml(PipelineConfig())
    assert "  online_erasing_threshold: null" in text.splitlines()
    prose = " ".join(" ".join(line.strip().lstrip("# ").split()) for line in text.splitlines())
    for words in ("ACoL", "element-wise max", "Cost:", "Changing it retrains"):
        assert words in prose, words


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_the_cpu(model, images):
    assert_cuda_maps_match_cpu(model, images)
