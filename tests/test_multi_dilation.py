"""The multi-dilated convolution head (wsss_core/model/multi_dilation.py, train.multi_dilation)."""

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
    tiny_features,
    tiny_images,
)

from wsss_core.cam import class_activation_maps
from wsss_core.config import ConfigError, PipelineConfig, TrainConfig, validated_config
from wsss_core.config import stage_config_hash as config_hash
from wsss_core.config_yaml import commented_yaml
from wsss_core.model.checkpoint import load_checkpoint, save_checkpoint
from wsss_core.model.classifier import (
    CamClassifier,
    MultiDilationClassifier,
    build_classifier,
    classifier_for,
)
from wsss_core.model.multi_dilation import MultiDilationHead
from wsss_core.model.run_files import requested_config
from wsss_core.model.weights import load_initial_weights
from wsss_core.stochastic_cam import StochasticSelection

DILATIONS = (1, 3, 6, 9)


@pytest.fixture(scope="module")
def model() -> MultiDilationClassifier:
    """conv-BN-ReLU x 2 (16 channels, stride 4), then the MDC head: 16 x 16 cells at 64 px."""
    features = tiny_features()
    return MultiDilationClassifier(features, 16, NUM_CLASSES, DILATIONS, width=12).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return tiny_images()


def _branch_maps_by_hand(model: MultiDilationClassifier, images: torch.Tensor) -> list:
    """Each branch's CAMs ``[B, C, h, w]`` from its own weights, with F.conv2d and einsum."""
    with torch.no_grad():
        features = model.features(images)
        maps = []
        for branch in model.head.branches:
            d = branch.conv.dilation[0]
            hidden = F.conv2d(
                features, branch.conv.weight, branch.conv.bias, padding=d, dilation=d
            ).relu()
            maps.append(torch.einsum("ck,bkhw->bchw", branch.classifier.weight, hidden))
    return maps


def test_the_branches_have_the_configured_dilations_and_keep_the_grid():
    config = TrainConfig(backbone="resnet18", weights=None, multi_dilation=DILATIONS)
    model = classifier_for(config.model_dump(mode="json"), NUM_CLASSES).eval()
    assert isinstance(model, MultiDilationClassifier)
    assert model.head.dilations == DILATIONS
    features = model.features(torch.randn(1, 3, 64, 64))
    for branch, dilation in zip(model.head.branches, DILATIONS, strict=True):
        assert branch.conv.kernel_size == (3, 3)
        assert branch.conv.dilation == (dilation, dilation)
        assert branch.conv.padding == (dilation, dilation)
        assert branch.conv.out_channels == config.multi_dilation_width
        assert branch.classifier.in_features == config.multi_dilation_width
        assert branch.classifier.out_features == NUM_CLASSES
        assert branch.hidden(features).shape[2:] == features.shape[2:]
    # Off, the classifier is the plain GAP + linear one, as before.
    plain = classifier_for(TrainConfig(backbone="resnet18").model_dump(mode="json"), 3)
    assert isinstance(plain, CamClassifier)


def test_the_cam_is_h1_plus_the_mean_of_the_dilated_maps(model, images):
    h1, *dilated = _branch_maps_by_hand(model, images)
    combined = (h1 + torch.stack(dilated).mean(dim=0)).relu()
    by_hand = F.interpolate(combined, size=(64, 64), mode="bilinear", align_corners=False)
    maps = class_activation_maps(model, images, TARGETS)
    for i, classes in enumerate(TARGETS):
        expected = by_hand[i, classes]
        expected = expected / expected.amax(dim=(1, 2), keepdim=True)
        np.testing.assert_allclose(maps[i], expected.numpy(), atol=1e-5)
    # One branch alone is not the map: the dilated branches change it.
    alone = F.interpolate(h1.relu(), size=(64, 64), mode="bilinear", align_corners=False)
    first = alone[0, TARGETS[0]] / alone[0, TARGETS[0]].amax(dim=(1, 2), keepdim=True)
    assert np.abs(maps[0] - first.numpy()).mean() > 1e-3


def test_the_score_is_the_same_combination_of_the_branch_scores(model, images):
    """logit = logit_1 + mean(logit_d): the spatial mean of the combined map plus the biases."""
    with torch.no_grad():
        branch = model.training_logits(images)
        scores = model(images)
    assert len(branch) == len(DILATIONS)
    torch.testing.assert_close(scores, branch[0] + torch.stack(branch[1:]).mean(dim=0))
    h1, *dilated = _branch_maps_by_hand(model, images)
    biases = [b.classifier.bias for b in model.head.branches]
    from_maps = (h1 + torch.stack(dilated).mean(dim=0)).mean(dim=(2, 3))
    from_maps = from_maps + biases[0] + torch.stack(biases[1:]).mean(dim=0)
    torch.testing.assert_close(scores, from_maps, atol=1e-5, rtol=1e-5)


def test_flip_and_scales_apply_to_the_combined_map(model, images):
    """A mirrored image's maps are the mirrored maps, at several scales too."""
    mirrored = images.flip(-1)
    maps = class_activation_maps(model, images, TARGETS, scales=(1.0, 0.5), flip=True)
    flipped = class_activation_maps(model, mirrored, TARGETS, scales=(1.0, 0.5), flip=True)
    for a, b in zip(maps, flipped, strict=True):
        np.testing.assert_allclose(b, a[..., ::-1], atol=1e-5)
        assert a.min() >= 0 and np.allclose(a.max(axis=(1, 2)), 1.0)


def test_training_sums_the_branch_losses_and_trains_every_branch():
    from wsss_core.model import training

    config = TrainConfig(
        backbone="resnet18", weights=None, epochs=1, image_size=64, multi_dilation=DILATIONS
    )
    device = torch.device("cpu")
    run = training.build_run(config, NUM_CLASSES, 1, device, False, print, initial_weights=False)
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, 64, 64, generator=generator)
    targets = (torch.rand(4, NUM_CLASSES, generator=generator) > 0.5).float()
    before = copy.deepcopy(run.model).train()
    with torch.no_grad():
        expected = sum(
            F.binary_cross_entropy_with_logits(logits, targets)
            for logits in before.training_logits(images)
        )
    loss = training._train_one_epoch(run, [(images, targets)], device, False, 1, 1, None)
    assert loss == pytest.approx(float(expected), rel=1e-5)
    for old, new in zip(before.head.branches, run.model.head.branches, strict=True):
        assert not torch.equal(old.conv.weight, new.conv.weight), old.dilation
        assert not torch.equal(old.classifier.weight, new.classifier.weight), old.dilation


def test_a_checkpoint_reloads_into_the_same_architecture_with_the_same_cams(
    model, images, tmp_path
):
    path = tmp_path / "classifier.pt"
    config = TrainConfig(
        backbone="resnet18", multi_dilation=DILATIONS, multi_dilation_width=12, image_size=64
    ).model_dump(mode="json")
    trained = build_classifier("resnet18", NUM_CLASSES, 16, DILATIONS, 12).eval()
    with torch.no_grad():  # weights of their own, not a fresh build's
        for parameter in trained.head.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    save_checkpoint(path, trained, names, config, {"val_map": 0.5}, {"config_hash": "x"})
    loaded = load_checkpoint(path, class_names=names)
    assert isinstance(loaded.model, MultiDilationClassifier)
    assert loaded.model.head.dilations == DILATIONS
    before = class_activation_maps(trained, images, TARGETS, scales=(1.0, 0.5))
    after = class_activation_maps(loaded.model, images, TARGETS, scales=(1.0, 0.5))
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_mdc_checkpoint_gives_its_backbone_as_initial_weights(tmp_path):
    source = build_classifier("resnet18", 3, 16, DILATIONS, 8)
    path = tmp_path / "mdc.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    target = build_classifier("resnet18", 2)
    load_initial_weights(target, "resnet18", str(path), log=lambda _: None)
    for key, value in source.features.state_dict().items():
        torch.testing.assert_close(target.features.state_dict()[key], value, rtol=0, atol=0)


def test_switching_it_retrains_and_the_default_hashes_are_unchanged():
    default = PipelineConfig()
    assert {stage: config_hash(default, stage) for stage in STAGES} == DEFAULT_HASHES
    on = PipelineConfig.model_validate({"train": {"multi_dilation": list(DILATIONS)}})
    assert all(config_hash(on, stage) != DEFAULT_HASHES[stage] for stage in STAGES)
    # The width counts while the head is on, and not while it is off.
    wider = PipelineConfig.model_validate(
        {"train": {"multi_dilation": list(DILATIONS), "multi_dilation_width": 64}}
    )
    assert config_hash(wider, "train") != config_hash(on, "train")
    idle = PipelineConfig.model_validate({"train": {"multi_dilation_width": 64}})
    assert config_hash(idle, "crf") == DEFAULT_HASHES["crf"]
    # A training run saved before the option existed stays resumable: off, it is not asked for.
    assert not {"multi_dilation", "multi_dilation_width"} & set(requested_config(TrainConfig()))
    assert requested_config(on.train)["multi_dilation"] == list(DILATIONS)


@pytest.mark.parametrize("bad", [[3, 6, 9], [1, 6, 3], [1, 3, 3], [1, 0], [1, 65]])
def test_bad_dilations_are_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match=r"^mdc\.yaml: train\.multi_dilation"):
        validated_config({"train": {"multi_dilation": bad}}, "mdc.yaml")


@pytest.mark.parametrize("bad", [[3, 6, 9], [1, 6, 3], [1, 3, 3], []])
def test_the_library_head_refuses_them_too(bad):
    with pytest.raises(ValueError, match=r"^the dilations must .*, got \("):
        MultiDilationHead(16, 3, bad, 8)


def test_gradient_methods_and_stochastic_passes_are_config_errors(model, images):
    mdc = {"multi_dilation": list(DILATIONS)}
    with pytest.raises(ValidationError, match="needs method cam, not gradcampp"):
        PipelineConfig.model_validate({"train": mdc, "cam": {"method": "gradcampp"}})
    with pytest.raises(ValidationError, match="stochastic_passes"):
        PipelineConfig.model_validate({"train": mdc, "cam": {"stochastic_passes": 8}})
    # The library refuses them too, with the same reason.
    with pytest.raises(ValueError, match="method must be 'cam'"):
        class_activation_maps(model, images, TARGETS, method="gradcam")
    with pytest.raises(ValueError, match="needs a linear head"):
        selection = StochasticSelection(4, 0.5)
        class_activation_maps(model, images, TARGETS, stochastic=selection, seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="start from 'features'"):
        class_activation_maps(model, images, TARGETS, target_layer="features.0")


def test_config_show_says_what_it_does_and_its_cost():
    text = commented_yaml(PipelineConfig())
    assert "  multi_dilation: []" in text.splitlines()
    prose = " ".join(" ".join(line.strip().lstrip("# ").split()) for line in text.splitlines())
    for words in ("MDC head", "d=1 branch's map", "Cost:", "Changing it retrains"):
        assert words in prose, words


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_the_cpu(model, images):
    assert_cuda_maps_match_cpu(model, images)
