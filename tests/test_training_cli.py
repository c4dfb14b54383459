"""`wsss train` through the real Prefect flow: trains, reuses, resumes, fails in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from folder_ingest import ingest_folder

from wsss_cli.main import main
from wsss_core.data.demo import generate_demo_dataset
from wsss_core.store.workspace import Workspace

FAST = [
    "--backbone",
    "resnet18",
    "--weights",
    "none",
    "--epochs",
    "1",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-train")
    demo = generate_demo_dataset(root / "demo", num_images=16, image_size=32, seed=2)
    ingest_folder(
        demo.images_dir, demo.labels_csv, Workspace(root / "ws"), demo.classes_txt, demo.masks_dir
    )
    return root / "ws"


def test_train_prints_the_map_then_reuses_the_model(workspace, capsys, prefect_harness):
    assert main(["train", "--workspace", str(workspace), *FAST]) == 0
    out = capsys.readouterr().out
    assert "classifier: validation mAP" in out and "trained in" in out
    assert "per-class AP: digit_0" in out
    for name in ("classifier.pt", "last.pt", "history.parquet", "training_curves.png"):
        assert (workspace / "models" / name).is_file(), name

    assert main(["train", "--workspace", str(workspace), *FAST]) == 0
    assert "reused, up to date" in capsys.readouterr().out


def test_resume_without_an_interrupted_run_is_a_one_line_error(tmp_path, capsys, prefect_harness):
    workspace = tmp_path / "ws"
    demo = generate_demo_dataset(tmp_path / "demo", num_images=4, image_size=32, seed=2)
    ingest_folder(demo.images_dir, demo.labels_csv, Workspace(workspace), demo.classes_txt)
    code = main(["train", "--workspace", str(workspace), "--resume", *FAST])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("wsss train: error:") and "nothing to resume" in err[-1]


def test_bad_config_value_is_a_usage_error_naming_the_file(tmp_path, capsys):
    # As the same value given as a flag (see test_cli): exit 2, before any work.
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  epochs: 0\n")
    code = main(["train", "--workspace", str(tmp_path), "--config", str(config)])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"wsss train: usage error: {config}: train.epochs:")


def test_unknown_backbone_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--workspace", str(tmp_path), "--backbone", "vgg16"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_label_refuses_an_unfinished_model_and_resume_finishes_it(
    tmp_path, capsys, prefect_harness
):
    import torch

    workspace = tmp_path / "ws"
    demo = generate_demo_dataset(tmp_path / "demo", num_images=4, image_size=32, seed=2)
    ingest_folder(demo.images_dir, demo.labels_csv, Workspace(workspace), demo.classes_txt)
    assert main(["train", "--workspace", str(workspace), *FAST]) == 0
    # What older versions left in classifier.pt when killed before marking it complete.
    model = workspace / "models" / "classifier.pt"
    payload = torch.load(model, weights_only=True)
    payload["metrics"]["complete"] = False
    torch.save(payload, model)
    capsys.readouterr()

    assert main(["label", "--workspace", str(workspace)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("wsss label: error:") and "unfinished training run" in err[-1]
    assert "wsss train --resume" in err[-1]

    assert main(["train", "--workspace", str(workspace), "--resume", *FAST]) == 0
    assert torch.load(model, weights_only=True)["metrics"]["complete"]
