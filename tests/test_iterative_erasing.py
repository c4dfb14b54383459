"""Iterative adversarial erasing, AE-PSL (wsss_core/model/iterative_erasing.py,
train.erasing_rounds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import (
    DEFAULT_HASHES,
    NUM_CLASSES,
    STAGES,
    TARGETS,
    multi_hot,
    tiny_features,
    tiny_images,
)
from torch import nn

from wsss_core.cam import class_activation_maps
from wsss_core.config import CamConfig, ConfigError, PipelineConfig, TrainConfig, validated_config
from wsss_core.config import stage_config_hash as config_hash
from wsss_core.config_yaml import commented_yaml
from wsss_core.model import training
from wsss_core.model.checkpoint import load_checkpoint, save_checkpoint
from wsss_core.model.classifier import CamClassifier, classifier_for
from wsss_core.model.iterative_erasing import ErasingRoundsClassifier
from wsss_core.model.run_files import requested_config

THRESHOLD = 0.6


def _tiny(seed: int) -> CamClassifier:
    """conv-BN-ReLU x 2 (16 channels, stride 4) + GAP + linear: 16 x 16 cells at 64 px."""
    features = tiny_features(seed)
    return CamClassifier(features, 16, NUM_CLASSES).eval()


@pytest.fixture(scope="module")
def rounds() -> list[CamClassifier]:
    return [_tiny(0), _tiny(1), _tiny(2)]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return tiny_images()


def _high(model: nn.Module, images: torch.Tensor) -> tuple[list[np.ndarray], np.ndarray]:
    """The model's plain CAMs and where one of each image's is >= the threshold."""
    maps = class_activation_maps(model, images, TARGETS)
    return maps, np.stack([(m >= THRESHOLD).any(axis=0) for m in maps])


def test_round_k_trains_on_images_erased_where_round_k_minus_1_is_high(rounds, images):
    # By hand: round 1 sees the images round 0 erased, round 2 those round 1 erased further.
    _, high0 = _high(rounds[0], images)
    seen_by_1 = images * torch.from_numpy(~high0)[:, None]
    _, high1 = _high(rounds[1], seen_by_1)
    seen_by_2 = seen_by_1 * torch.from_numpy(~high1)[:, None]
    assert 0 < high0.sum() < high0.size / 2 and (high1 & ~high0).any()

    erase_for_1 = training.round_eraser(rounds[:1], THRESHOLD)
    erase_for_2 = training.round_eraser(rounds[:2], THRESHOLD)
    torch.testing.assert_close(erase_for_1(images, multi_hot(TARGETS)), seen_by_1, rtol=0, atol=0)
    erased = erase_for_2(images, multi_hot(TARGETS))
    pixels = erased.permute(0, 2, 3, 1)  # [B, H, W, 3]
    assert torch.all(pixels[torch.from_numpy(high1)] == 0)  # round 1's high region: zero
    kept = torch.from_numpy(~(high0 | high1))
    torch.testing.assert_close(pixels[kept], images.permute(0, 2, 3, 1)[kept], rtol=0, atol=0)
    torch.testing.assert_close(erased, seen_by_2, rtol=0, atol=0)

    # The training step feeds round 2's classifier exactly those images.
    config = TrainConfig(backbone="resnet18", weights=None, epochs=1, image_size=64)
    run = training.build_run(config, NUM_CLASSES, 1, torch.device("cpu"), False, print, False)
    fed: list[torch.Tensor] = []
    run.model.register_forward_pre_hook(lambda _m, args: fed.append(args[0].clone()))
    batch = [(images, multi_hot(TARGETS))]
    training._train_one_epoch(run, batch, torch.device("cpu"), False, 1, 1, None, erase_for_2)
    torch.testing.assert_close(fed[0], seen_by_2, rtol=0, atol=0)


def test_the_cam_is_the_max_over_the_rounds(rounds, images):
    model = ErasingRoundsClassifier(rounds, THRESHOLD)
    maps0, high0 = _high(rounds[0], images)
    seen_by_1 = images * torch.from_numpy(~high0)[:, None]
    maps1, high1 = _high(rounds[1], seen_by_1)
    maps2, _ = _high(rounds[2], seen_by_1 * torch.from_numpy(~high1)[:, None])
    fused = class_activation_maps(model, images, TARGETS)
    for i in range(len(TARGETS)):
        np.testing.assert_array_equal(
            fused[i], np.maximum(np.maximum(maps0[i], maps1[i]), maps2[i])
        )
        assert not np.array_equal(fused[i], maps0[i])
    # Its score is round 0's.
    with torch.no_grad():
        torch.testing.assert_close(model(images), rounds[0](images))


def test_a_checkpoint_holds_every_round_and_reloads_with_the_same_cams(images, tmp_path):
    config = TrainConfig(
        backbone="resnet18", weights=None, image_size=64, erasing_rounds=2, erasing_threshold=0.5
    ).model_dump(mode="json")
    model = classifier_for(config, NUM_CLASSES).eval()
    assert isinstance(model, ErasingRoundsClassifier) and len(model.rounds) == 3
    assert all(isinstance(r, CamClassifier) for r in model.rounds) and model.threshold == 0.5
    with torch.no_grad():  # rounds that differ, as trained ones do
        for index, round_model in enumerate(model.rounds):
            round_model.head.weight.add_(torch.randn_like(round_model.head.weight) * index)
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    path = tmp_path / "classifier.pt"
    save_checkpoint(path, model, names, config, {"val_map": 0.5}, {"config_hash": "x"})
    loaded = load_checkpoint(path, class_names=names)
    assert isinstance(loaded.model, ErasingRoundsClassifier) and len(loaded.model.rounds) == 3
    before = class_activation_maps(model, images, TARGETS, scales=(1.0, 0.5), flip=True)
    after = class_activation_maps(loaded.model, images, TARGETS, scales=(1.0, 0.5), flip=True)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_switching_it_retrains_and_the_default_hashes_are_unchanged():
    default = PipelineConfig()
    assert {stage: config_hash(default, stage) for stage in STAGES} == DEFAULT_HASHES
    on = PipelineConfig.model_validate({"train": {"erasing_rounds": 2}})
    assert all(config_hash(on, stage) != DEFAULT_HASHES[stage] for stage in STAGES)
    lower = PipelineConfig.model_validate(
        {"train": {"erasing_rounds": 2, "erasing_threshold": 0.5}}
    )
    assert config_hash(lower, "train") != config_hash(on, "train")
    idle = PipelineConfig.model_validate({"train": {"erasing_threshold": 0.5}})
    assert config_hash(idle, "crf") == DEFAULT_HASHES["crf"]
    assert not {"erasing_rounds", "erasing_threshold"} & set(requested_config(TrainConfig()))


def test_resume_is_refused_with_a_clear_error(tmp_path):
    from wsss_core.data.manifest import Manifest

    config = TrainConfig(backbone="resnet18", weights=None, erasing_rounds=1)
    manifest = Manifest(class_names=("a",), records=())
    with pytest.raises(ValueError, match="without resume: train without --resume"):
        training.train_classifier(manifest, config, tmp_path, device="cpu", resume=True)


@pytest.mark.parametrize(
    "bad", [{"erasing_rounds": 6}, {"erasing_rounds": -1}, {"erasing_threshold": 1}]
)
def test_out_of_bounds_is_refused_naming_the_key(bad):
    key = next(iter(bad))
    with pytest.raises(ConfigError, match=rf"^ae\.yaml: train\.{key}"):
        validated_config({"train": bad}, "ae.yaml")


@pytest.mark.skipif("cross_image_weight" not in CamConfig.model_fields, reason="no cross-image")
def test_cross_image_attention_with_rounds_is_a_config_error():
    with pytest.raises(ConfigError, match="erasing_rounds"):
        validated_config(
            {"train": {"erasing_rounds": 1}, "cam": {"cross_image_weight": 0.5}}, "ae.yaml"
        )


def test_config_show_says_what_it_does_and_its_cost():
    text = commented_yaml(PipelineConfig())
    assert "  erasing_rounds: 0" in text.splitlines()
    prose = " ".join(" ".join(line.strip().lstrip("# ").split()) for line in text.splitlines())
    for words in ("AE-PSL", "element-wise max of the rounds' maps", "Cost:", "no --resume"):
        assert words in prose, words
