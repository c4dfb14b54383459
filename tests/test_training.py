"""Classifier training: it learns, resumes exactly, records its history, and fails clearly."""

from __future__ import annotations

import errno
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from folder_ingest import ingest_folder
from PIL import Image

from wsss_core.config import PipelineConfig, TrainConfig
from wsss_core.data.demo import generate_demo_dataset
from wsss_core.data.images import is_decode_error, load_rgb
from wsss_core.data.manifest import ImageRecord, Manifest, read_manifest
from wsss_core.metrics import mean_average_precision
from wsss_core.model.checkpoint import TrainingPaths, load_checkpoint, load_training_state
from wsss_core.model.dataset import UnreadableImage, load_training_image, unreadable_images
from wsss_core.model.history import read_history
from wsss_core.model.reuse import train_or_reuse
from wsss_core.model.sizing import resolve_train_config
from wsss_core.model.training import train_classifier
from wsss_core.model.weights import local_copy
from wsss_core.store.workspace import Workspace

# resnet18 from scratch on 48 px canvases: a few seconds an epoch on a busy core.
TINY = TrainConfig(backbone="resnet18", weights=None, image_size=48, epochs=3, batch_size=8)


def quiet(_: str) -> None:
    pass


def _demo_workspace(root: Path, **demo_args) -> Workspace:
    demo = generate_demo_dataset(root / "demo", **demo_args)
    workspace = Workspace(root / "ws")
    ingest_folder(demo.images_dir, demo.labels_csv, workspace, demo.classes_txt, demo.masks_dir)
    return workspace


@pytest.fixture(scope="module")
def tiny_workspace(tmp_path_factory) -> Workspace:
    return _demo_workspace(tmp_path_factory.mktemp("tiny"), num_images=24, image_size=48, seed=1)


@pytest.fixture(scope="module")
def tiny_manifest(tiny_workspace: Workspace) -> Manifest:
    return read_manifest(tiny_workspace)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(first: Path, second: Path) -> None:
    a, b = _state(first), _state(second)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_tiny_demo_run_learns_well_above_chance(tmp_path: Path):
    if local_copy("mobilenet_v2", "IMAGENET1K_V1") is None:
        pytest.skip("offline MobileNetV2 ImageNet weights not installed (make install)")
    workspace = _demo_workspace(tmp_path, num_images=96, image_size=64, seed=5)
    manifest = read_manifest(workspace)
    # The default recipe (pretrained MobileNetV2, lrs, schedule), shrunk: 77 training
    # images upscaled to 128 px, 4 epochs, crops that keep most of each digit.
    config = TrainConfig(image_size=128, epochs=4, batch_size=16, crop_scale=(0.8, 1.0))
    result = train_classifier(manifest, config, workspace.models_dir, device="cpu", log=quiet)

    val = [r for r in manifest.records if r.split == "val"]
    targets = np.zeros((len(val), len(manifest.class_names)))
    for row, record in enumerate(val):
        targets[row, list(record.labels)] = 1
    rng = np.random.default_rng(0)
    chance = np.mean(
        [mean_average_precision(rng.random(targets.shape), targets)[0] for _ in range(50)]
    )
    assert chance < 0.3  # random scores on this small val set
    # about 0.61 here (1 or 2 threads)
    assert result.val_map > max(0.45, chance + 0.2), [m.val_map for m in result.history]
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_kill_after_epoch_one_then_resume_gives_the_uninterrupted_weights(
    tiny_manifest: Manifest, tmp_path: Path
):
    whole = train_classifier(tiny_manifest, TINY, tmp_path / "whole", device="cpu", log=quiet)
    killed = train_classifier(
        tiny_manifest, TINY, tmp_path / "killed", device="cpu", log=quiet, stop_after_epoch=1
    )
    assert not killed.completed and len(killed.history) == 1
    # the best model so far is only a candidate: no classifier.pt until the run finishes
    assert not load_checkpoint(tmp_path / "killed" / "candidate.pt").complete
    assert not (tmp_path / "killed" / "classifier.pt").exists()
    messages: list[str] = []
    resumed = train_classifier(
        tiny_manifest, TINY, tmp_path / "killed", device="cpu", log=messages.append, resume=True
    )
    assert resumed.completed and resumed.resumed_from == 1 and resumed.epochs_run == 2
    assert any("resuming after epoch 1/3" in m for m in messages)
    assert not any(m.startswith("epoch 1/") for m in messages)  # epoch 1 not redone
    _assert_same_weights(tmp_path / "whole" / "last.pt", tmp_path / "killed" / "last.pt")
    _assert_same_weights(
        tmp_path / "whole" / "classifier.pt", tmp_path / "killed" / "classifier.pt"
    )
    assert [m.val_map for m in resumed.history] == [m.val_map for m in whole.history]
    assert resumed.best_epoch == whole.best_epoch and resumed.val_map == whole.val_map
    assert load_checkpoint(tmp_path / "killed" / "classifier.pt").complete
    assert not (tmp_path / "killed" / "candidate.pt").exists()  # promoted by renaming


def test_resume_refuses_another_class_list_config_or_nothing(
    tiny_manifest: Manifest, tmp_path: Path
):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_classifier(tiny_manifest, TINY, tmp_path, device="cpu", log=quiet, resume=True)
    one_epoch = TINY.model_copy(update={"epochs": 1})
    train_classifier(tiny_manifest, one_epoch, tmp_path, device="cpu", log=quiet)
    renamed = replace(tiny_manifest, class_names=(*tiny_manifest.class_names[:-1], "digit_nine"))
    with pytest.raises(ValueError, match=r"class list .* does not match.*digit_nine"):
        train_classifier(renamed, one_epoch, tmp_path, device="cpu", log=quiet, resume=True)
    with pytest.raises(ValueError, match=r"different train config.*learning_rate"):
        train_classifier(
            tiny_manifest,
            one_epoch.model_copy(update={"learning_rate": 0.5}),
            tmp_path,
            device="cpu",
            log=quiet,
            resume=True,
        )
    with pytest.raises(ValueError, match="class list of the checkpoint"):
        load_checkpoint(tmp_path / "classifier.pt", class_names=renamed.class_names)


def test_history_parquet_and_curves_are_written(tiny_manifest: Manifest, tmp_path: Path):
    config = TINY.model_copy(update={"epochs": 2})
    result = train_classifier(tiny_manifest, config, tmp_path, device="cpu", log=quiet)
    paths = TrainingPaths.in_dir(tmp_path)
    history, metadata = read_history(paths.history)
    assert [m.epoch for m in history] == [1, 2]
    assert [m.val_map for m in history] == [m.val_map for m in result.history]
    assert all(len(m.val_ap) == 10 and m.seconds > 0 for m in history)
    assert history[0].lr > history[1].lr >= 0  # cosine decay to 0 at the last step
    assert metadata["class_names"] == list(tiny_manifest.class_names)
    assert metadata["complete"] is True and metadata["best_epoch"] == result.best_epoch
    assert paths.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths.last.exists()


def test_empty_training_split_is_a_clear_error(tiny_manifest: Manifest, tmp_path: Path):
    only_val = replace(
        tiny_manifest, records=tuple(r for r in tiny_manifest.records if r.split == "val")
    )
    with pytest.raises(ValueError, match="train split has no labelled image"):
        train_classifier(only_val, TINY, tmp_path, device="cpu", log=quiet)


def test_a_class_without_positive_examples_is_a_warning(tiny_manifest: Manifest, tmp_path: Path):
    extra = replace(tiny_manifest, class_names=(*tiny_manifest.class_names, "zebra"))
    messages: list[str] = []
    config = TINY.model_copy(update={"epochs": 1})
    result = train_classifier(extra, config, tmp_path, device="cpu", log=messages.append)
    assert any("no positive training image" in m and "zebra" in m for m in messages)
    assert any("no positive validation image" in m and "zebra" in m for m in messages)
    assert np.isnan(result.per_class_ap[-1]) and np.isfinite(result.val_map)


def test_nan_loss_is_a_clear_error(tiny_manifest: Manifest, tmp_path: Path):
    config = TINY.model_copy(update={"epochs": 1, "learning_rate": 1e30})
    with pytest.raises(FloatingPointError, match=r"loss became .* lower train.learning_rate"):
        train_classifier(tiny_manifest, config, tmp_path, device="cpu", log=quiet)


def _records(sides: list[int]) -> list[ImageRecord]:
    return [
        ImageRecord(f"i{n}", "x", side, side // 2, (0,), "train", "")
        for n, side in enumerate(sides)
    ]


def test_image_size_and_epochs_are_chosen_from_the_data():
    config = TrainConfig()
    demo, reasons = resolve_train_config(config, _records([128] * 480), "cpu")
    assert demo.image_size == 128 and demo.epochs == 10 and len(reasons) == 2
    big, _ = resolve_train_config(config, _records([500] * 3000), "cpu")
    assert big.image_size == 256 and big.epochs == 3  # the CPU budget caps the work
    gpu, _ = resolve_train_config(config, _records([500] * 3000), "cuda")
    assert gpu.image_size == 448 and gpu.epochs == 7  # about 600 steps of 93
    small, _ = resolve_train_config(config, _records([40] * 50), "cpu")
    assert small.image_size == 128 and small.epochs <= 40
    fixed, reasons = resolve_train_config(
        config.model_copy(update={"image_size": 96, "epochs": 2}), _records([500] * 10)
    )
    assert (fixed.image_size, fixed.epochs, reasons) == (96, 2, [])


def test_train_or_reuse_resumes_an_interrupted_run_then_reuses_it(tiny_workspace: Workspace):
    config = PipelineConfig(device="cpu", train=TINY.model_copy(update={"epochs": 2}))
    first = train_or_reuse(
        tiny_workspace, config, log=quiet, show_progress=False, stop_after_epoch=1
    )
    assert first.trained and first.resumed_from == 0
    # killed after epoch 1: the unfinished best model is not reused, the run is continued
    second = train_or_reuse(tiny_workspace, config, log=quiet, show_progress=False)
    assert second.trained and second.resumed_from == 1 and second.epochs == 2
    third = train_or_reuse(tiny_workspace, config, log=quiet, show_progress=False)
    assert not third.trained and third.val_map == second.val_map
    assert third.model_hash == second.model_hash
    np.testing.assert_equal(third.per_class_ap, second.per_class_ap)  # NaN where no positive
    with pytest.raises(ValueError, match="exclude each other"):
        train_or_reuse(tiny_workspace, config, log=quiet, force=True, resume=True)


def _truncate_to_half_a_jpeg(path: str) -> None:
    """What a copy cut short leaves: the image as JPEG, its second half missing."""
    buffer = io.BytesIO()
    Image.fromarray(load_rgb(path)).save(buffer, format="JPEG", quality=90)
    Path(path).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def test_an_unreadable_image_is_left_out_of_training_with_one_warning(tmp_path: Path):
    workspace = _demo_workspace(tmp_path, num_images=16, image_size=48, seed=3)
    manifest = read_manifest(workspace)
    truncated = next(r for r in manifest.records if r.split == "train" and r.labels)
    deleted = next(r for r in manifest.records if r.split == "val" and r.labels)
    _truncate_to_half_a_jpeg(truncated.uri)
    Path(deleted.uri).unlink()
    config = TINY.model_copy(update={"epochs": 2})

    messages: list[str] = []
    result = train_classifier(manifest, config, tmp_path / "m", device="cpu", log=messages.append)

    assert result.completed and len(result.history) == 2
    warnings = [m for m in messages if "unreadable image" in m]
    assert len(warnings) == 2  # once per image, not once per epoch
    assert sum(truncated.uri in m and "truncated" in m for m in warnings) == 1
    assert sum(deleted.uri in m for m in warnings) == 1
    skipped = {truncated.image_id, deleted.image_id}
    assert set(result.skipped_images) == skipped
    assert set(load_checkpoint(tmp_path / "m" / "classifier.pt").metrics["skipped_images"]) == (
        skipped
    )
    assert set(load_training_state(tmp_path / "m" / "last.pt")["skipped_images"]) == skipped

    # Left out exactly as if the manifest had not listed them: same weights, same scores.
    without = replace(
        manifest, records=tuple(r for r in manifest.records if r.image_id not in skipped)
    )
    clean = train_classifier(without, config, tmp_path / "clean", device="cpu", log=quiet)
    assert clean.skipped_images == {}
    _assert_same_weights(tmp_path / "m" / "classifier.pt", tmp_path / "clean" / "classifier.pt")
    assert [m.val_map for m in clean.history] == [m.val_map for m in result.history]


def test_only_the_files_errors_count_as_unreadable(tiny_manifest: Manifest, tmp_path: Path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not the rest of a JPEG")
    with pytest.raises(UnreadableImage, match=str(broken)):
        load_training_image(str(broken))
    # The machine's errors and the code's are not the image's: they stop training.
    assert not is_decode_error(MemoryError())
    assert not is_decode_error(OSError(errno.EMFILE, "Too many open files"))
    assert is_decode_error(FileNotFoundError(errno.ENOENT, "No such file"))
    bug = replace(tiny_manifest.records[0], uri=None)  # not a path: Pillow fails, not the file
    with pytest.raises(AttributeError):
        unreadable_images([bug])


def test_no_readable_training_image_is_a_clear_error(tiny_manifest: Manifest, tmp_path: Path):
    gone = replace(
        tiny_manifest,
        records=tuple(
            replace(r, uri=str(tmp_path / f"{r.image_id}.png")) for r in tiny_manifest.records
        ),
    )
    with pytest.raises(ValueError, match=r"none of the \d+ labelled train images can be read"):
        train_classifier(gone, TINY, tmp_path, device="cpu", log=quiet)
