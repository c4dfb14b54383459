"""CAM-ready classifiers, initial weights from local files, training and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models

from wsss_core.config import TrainConfig
from wsss_core.data.demo import generate_demo_dataset
from wsss_core.data.folder_source import ingest_folder
from wsss_core.data.manifest import Manifest, read_manifest
from wsss_core.model.classifier import BACKBONES, build_classifier
from wsss_core.model.training import load_checkpoint, train_classifier
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
    assert model.head.out_features == 5
    assert messages == []


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
    path = tmp_path / "model.pt"
    result = train_classifier(tiny_manifest, config, path, device="cpu", log=lambda _: None)
    assert len(result.history) == 1 and 0.0 <= result.val_map <= 1.0
    loaded = load_checkpoint(path)
    assert loaded.class_names == tiny_manifest.class_names
    assert loaded.image_size == 48 and not loaded.model.training
    payload = torch.load(path, weights_only=True)  # plain torch can read it
    assert payload["backbone"] == "resnet18"


def test_training_without_labelled_train_images_is_a_clear_error(tiny_manifest, tmp_path):
    only_val = Manifest(
        tiny_manifest.class_names,
        tuple(r for r in tiny_manifest.records if r.split == "val"),
    )
    with pytest.raises(ValueError, match="train split has no labelled image"):
        train_classifier(only_val, TrainConfig(weights=None), tmp_path / "m.pt")
