"""CAM-ready classifiers, initial weights from local files, training and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from folder_ingest import ingest_folder
from torchvision import models

from wsss_core.config import TrainConfig
from wsss_core.data.demo import generate_demo_dataset
from wsss_core.data.manifest import Manifest, read_manifest
from wsss_core.model.checkpoint import load_checkpoint, save_checkpoint
from wsss_core.model.classifier import BACKBONES, build_classifier
from wsss_core.model.training import train_classifier
from wsss_core.model.weights import load_initial_weights
from wsss_core.store.workspace import Workspace


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2", "mobilenet_v3_small"])
def test_classifier_is_features_then_pooling_then_linear(backbone):
    model = build_classifier(backbone, num_classes=4).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.features(images)
        logits = model(images)
    assert features.shape[:2] == (2, BACKBONES[backbone].feature_channels)
    assert features.shape[2:] == (2, 2)  # output stride 32
    torch.testing.assert_close(logits, model.head(features.mean(dim=(2, 3))))


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "mobilenet_v2"])
def test_output_stride_16_doubles_the_map_resolution(backbone):
    model = build_classifier(backbone, num_classes=3, output_stride=16).eval()
    with torch.no_grad():
        assert model.features(torch.randn(1, 3, 64, 64)).shape[2:] == (4, 4)


def test_bad_backbone_and_stride_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_classifier("vgg", 3)
    with pytest.raises(ValueError, match="output_stride"):
        build_classifier("resnet18", 3, output_stride=8)


def test_initial_weights_from_a_local_state_dict(tmp_path: Path):
    torch.manual_seed(0)
    reference = models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_classifier("resnet18", num_classes=5)
    messages: list[str] = []
    load_initial_weights(model, "resnet18", str(path), log=messages.append)
    torch.testing.assert_close(model.features[0].weight, reference.conv1.weight)
    torch.testing.assert_close(model.features[7][1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.testing.assert_close(model.features[1].running_var, reference.bn1.running_var)
    assert model.head.out_features == 5
    assert messages == ["weights " + str(path) + ": 2 classifier-head key(s) skipped (new head)"]


def test_weights_with_another_head_and_stray_keys_load_with_a_message(tmp_path: Path):
    torch.manual_seed(1)
    reference = models.mobilenet_v3_small(weights=None, num_classes=7)  # head shape differs
    state = reference.state_dict()
    state["features.0.0.weight"] = torch.zeros(3, 3, 1, 1)  # wrong shape: skipped
    state["extra.weight"] = torch.zeros(1)  # unknown key: skipped
    path = tmp_path / "other.pth"
    torch.save({"state_dict": state}, path)
    model = build_classifier("mobilenet_v3_small", num_classes=3)
    before = model.features[0][0].weight.clone()
    messages: list[str] = []
    load_initial_weights(model, "mobilenet_v3_small", str(path), log=messages.append)
    torch.testing.assert_close(model.features[0][0].weight, before)  # kept its init
    torch.testing.assert_close(
        model.features[1].block[0][0].weight, state["features.1.block.0.0.weight"]
    )
    joined = "\n".join(messages)
    assert "classifier-head key(s) skipped" in joined
    assert "2 key(s) do not fit mobilenet_v3_small" in joined and "extra.weight" in joined
    assert "keep their random initialisation: features.0.0.weight" in joined


def test_weights_from_a_wsss_checkpoint_reuse_its_backbone(tmp_path: Path):
    source = build_classifier("resnet18", num_classes=4)
    path = tmp_path / "classifier.pt"
    save_checkpoint(path, source, list("abcd"), {"backbone": "resnet18"}, {}, {})
    model = build_classifier("resnet18", num_classes=2)
    load_initial_weights(model, "resnet18", str(path), log=lambda _: None)
    for name, value in source.features.state_dict().items():
        torch.testing.assert_close(model.features.state_dict()[name], value)
    assert model.head.out_features == 2


def test_weights_sharing_nothing_are_a_clear_error(tmp_path: Path):
    path = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="share no key with resnet18"):
        load_initial_weights(build_classifier("resnet18", 2), "resnet18", str(path))


def test_unknown_weights_name_is_a_clear_error():
    model = build_classifier("resnet18", 2)
    with pytest.raises(ValueError, match="neither a file nor a torchvision weights name"):
        load_initial_weights(model, "resnet18", "NOT_A_WEIGHTS_NAME")


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Manifest:
    root = tmp_path_factory.mktemp("tiny")
    demo = generate_demo_dataset(root / "demo", num_images=16, image_size=48, seed=1)
    workspace = Workspace(root / "ws")
    ingest_folder(demo.images_dir, demo.labels_csv, workspace, demo.classes_txt, demo.masks_dir)
    return read_manifest(workspace)


def test_training_writes_a_self_contained_checkpoint(tiny_manifest: Manifest, tmp_path: Path):
    config = TrainConfig(backbone="resnet18", weights=None, image_size=48, epochs=1, batch_size=8)
    result = train_classifier(tiny_manifest, config, tmp_path, device="cpu", log=lambda _: None)
    assert len(result.history) == 1 and 0.0 <= result.val_map <= 1.0
    assert result.checkpoint == tmp_path / "classifier.pt"
    loaded = load_checkpoint(result.checkpoint, class_names=tiny_manifest.class_names)
    assert loaded.class_names == tiny_manifest.class_names
    assert loaded.image_size == 48 and not loaded.model.training
    assert loaded.complete and loaded.backbone == "resnet18"
    payload = torch.load(result.checkpoint, weights_only=True)  # plain torch can read it
    assert payload["format"] == "wsss-classifier/1"
    assert {"backbone", "class_names", "config", "metrics", "lineage", "state_dict"} <= set(payload)
    assert payload["config"]["epochs"] == 1 and len(payload["metrics"]["per_class_ap"]) == 10
    # ... and rebuild the model from it without the training code
    model = build_classifier(
        payload["backbone"], len(payload["class_names"]), payload["config"]["output_stride"]
    )
    model.load_state_dict(payload["state_dict"])
