"""The scenes development dataset: layout, ground truth, determinism, and how it is chosen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from demo_checks import all_files, assert_labels_match_masks, dataset_rows, mask_of
from PIL import Image
from scipy import ndimage

from wsss_cli.commands import ingest as ingest_command
from wsss_cli.commands import pipeline as pipeline_command
from wsss_cli.main import build_parser, main
from wsss_core.config import DemoConfig
from wsss_core.data import scenes
from wsss_core.data.demo import DemoDataset
from wsss_core.data.scenes import SCENE_CLASS_NAMES, generate_scenes_dataset
from wsss_core.store.workspace import Workspace

SIZE = 96
NUM_IMAGES = 30
LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    out_dir = tmp_path_factory.mktemp("scenes")
    return generate_scenes_dataset(out_dir, num_images=NUM_IMAGES, image_size=SIZE, seed=3)


def test_layout_and_class_list(dataset: DemoDataset) -> None:
    assert dataset.classes_txt.read_text().splitlines() == list(SCENE_CLASS_NAMES)
    assert len(SCENE_CLASS_NAMES) == 8 and "horse" in SCENE_CLASS_NAMES
    assert dataset.labels_csv.read_text().splitlines()[0] == "image_id,labels,split"
    ids = [row["image_id"] for row in dataset_rows(dataset)]
    assert ids == [f"scene_{i:05d}" for i in range(NUM_IMAGES)]
    assert sorted(p.stem for p in dataset.images_dir.iterdir()) == ids
    assert sorted(p.stem for p in dataset.masks_dir.iterdir()) == ids
    splits = [row["split"] for row in dataset_rows(dataset)]
    assert splits.count("val") == dataset.num_val == 6  # round(30 * 0.2), exact
    assert not list(dataset.root.rglob(".*.tmp"))


def test_images_and_masks_format(dataset: DemoDataset) -> None:
    for row in dataset_rows(dataset):
        image = Image.open(dataset.images_dir / f"{row['image_id']}.png")
        mask = Image.open(dataset.masks_dir / f"{row['image_id']}.png")
        assert image.mode == "RGB" and image.size == (SIZE, SIZE)
        assert mask.mode == "L" and mask.size == (SIZE, SIZE)
        assert set(np.unique(np.asarray(mask)).tolist()) <= set(range(9)) | {255}


def test_every_canvas_has_labels_equal_to_its_mask_classes(dataset: DemoDataset) -> None:
    assert_labels_match_masks(dataset, SCENE_CLASS_NAMES)


def test_object_edges_are_an_ignore_band(dataset: DemoDataset) -> None:
    ignored = total = 0
    for row in dataset_rows(dataset):
        mask = mask_of(dataset, row["image_id"])
        foreground = (mask > 0) & (mask < 255)
        border = ndimage.binary_dilation(foreground) & ~foreground
        ignored += int((mask[border] == 255).sum())
        total += int(border.sum())
    assert ignored > 0.85 * total
    assert ignored < 0.2 * NUM_IMAGES * SIZE * SIZE  # a band, not whole regions


def test_backgrounds_are_cluttered_and_objects_textured(dataset: DemoDataset) -> None:
    object_stds = []
    for row in dataset_rows(dataset):
        image = Image.open(dataset.images_dir / f"{row['image_id']}.png")
        luma = np.asarray(image, np.float64) @ LUMA
        mask = mask_of(dataset, row["image_id"])
        assert luma[mask == 0].std() > 10.0, "background must not be flat"
        for value in set(np.unique(mask).tolist()) - {0, 255}:
            core = ndimage.binary_erosion(mask == value, iterations=2)
            if core.sum() >= 50:
                object_stds.append(luma[core].std())
    assert np.median(object_stds) > 6.0, "objects are textured, not flat"


def test_large_and_small_objects_occur() -> None:
    sides, largest = [], []
    for index in range(40):
        canvas = scenes._render_scene(np.random.default_rng([0, 3, index]), SIZE)
        sides += [max(item.alpha.shape) / SIZE for item in canvas.objects]
        largest.append(max(sides[-len(canvas.objects) :]))
    assert max(sides) >= 0.7 and min(sides) <= 0.3
    assert 0.2 < np.mean(np.array(largest) > 0.5) < 0.7  # about half the canvases


def test_same_arguments_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kwargs = {"num_images": 4, "image_size": 48}
    generate_scenes_dataset(tmp_path / "a", seed=7, **kwargs)
    generate_scenes_dataset(tmp_path / "b", seed=7, **kwargs)
    generate_scenes_dataset(tmp_path / "c", seed=8, **kwargs)
    first, second, other = (all_files(tmp_path / name) for name in "abc")
    assert first == second
    assert first.keys() == other.keys()
    assert first["images/scene_00000.png"] != other["images/scene_00000.png"]


def test_rerun_removes_stale_scenes_and_digits(tmp_path: Path) -> None:
    for folder in ("images", "masks"):  # a digits demo written to the same folder before
        (tmp_path / folder).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / folder / "demo_00000.png")
    generate_scenes_dataset(tmp_path, num_images=3, image_size=48)
    dataset = generate_scenes_dataset(tmp_path, num_images=2, image_size=48)
    expected = ["scene_00000.png", "scene_00001.png"]
    assert sorted(p.name for p in dataset.images_dir.iterdir()) == expected
    assert sorted(p.name for p in dataset.masks_dir.iterdir()) == expected


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        generate_scenes_dataset(tmp_path, num_images=2, image_size=31)


def test_ingest_demo_of_kind_scenes(tmp_path: Path) -> None:
    from wsss_core.data.manifest import read_manifest
    from wsss_core.stages.ingest_stage import ingest

    workspace = Workspace(tmp_path / "ws")
    config = DemoConfig(kind="scenes", num_images=5, image_size=64)
    summary = ingest("demo", None, workspace, demo=config)
    manifest = read_manifest(workspace)
    assert summary.ingested == 5 and manifest.class_names == SCENE_CLASS_NAMES
    assert manifest.source["kind"] == "demo"
    assert all(r.gt_uri and r.image_id.startswith("scene_") for r in manifest.records)
    assert {(r.width, r.height) for r in manifest.records} == {(64, 64)}


def test_image_size_null_is_the_kinds_default(tmp_path: Path) -> None:
    from wsss_core.data.folder_source import scan_demo

    assert DemoConfig().image_size is None and DemoConfig().kind == "digits"
    scan = scan_demo(tmp_path / "s", DemoConfig(kind="scenes", num_images=1))
    assert Image.open(scan.items[0].image_path).size == (192, 192)
    scan = scan_demo(tmp_path / "d", DemoConfig(num_images=1))
    assert Image.open(scan.items[0].image_path).size == (128, 128)


@pytest.mark.parametrize("command", [["demo"], ["ingest", "demo", "--workspace", "ws"]])
def test_dataset_option_parses(command: list[str]) -> None:
    assert build_parser().parse_args(command).dataset is None
    assert build_parser().parse_args([*command, "--dataset", "scenes"]).dataset == "scenes"


@pytest.mark.parametrize("command", [["demo"], ["ingest", "demo", "--workspace", "ws"]])
def test_unknown_dataset_is_a_usage_error(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--dataset", "mnist"])
    assert exit_info.value.code == 2
    assert "--dataset" in capsys.readouterr().err


def test_dataset_with_another_source_is_a_usage_error(tmp_path: Path, capsys) -> None:
    workspace = tmp_path / "ws"
    argv = ["ingest", "folder", "data", "--workspace", str(workspace), "--dataset", "scenes"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "wsss ingest: usage error: --dataset is for the demo source, not folder"
    assert not workspace.exists()


def _saved_config(workspace: Path) -> None:
    workspace.mkdir()
    demo_section = {"num_images": 7, "seed": 2}
    (workspace / "config.yaml").write_text(yaml.safe_dump({"demo": demo_section}))


def test_demo_dataset_overrides_kind_of_the_saved_config(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    _saved_config(workspace)
    args = build_parser().parse_args(["demo", "--workspace", str(workspace)])
    assert pipeline_command._pipeline_config(args).demo == DemoConfig(num_images=7, seed=2)
    args = build_parser().parse_args(["demo", "--workspace", str(workspace), "--dataset", "scenes"])
    config = pipeline_command._pipeline_config(args)
    assert config.demo == DemoConfig(kind="scenes", num_images=7, seed=2)


def test_ingest_dataset_overrides_kind_of_the_given_config(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    _saved_config(workspace)
    given = tmp_path / "given.yaml"
    given.write_text("demo:\n  num_images: 3\n  kind: digits\n")
    argv = ["ingest", "demo", "--workspace", str(workspace), "--dataset", "scenes"]
    config = ingest_command._config(build_parser().parse_args(argv))
    assert config.demo == DemoConfig(kind="scenes", num_images=7, seed=2)
    # The given file over the saved config (its keys win, seed 2 is kept), the flag on top.
    args = build_parser().parse_args([*argv, "--config", str(given)])
    assert ingest_command._config(args).demo == DemoConfig(kind="scenes", num_images=3, seed=2)
    args = build_parser().parse_args([*argv, "--config", str(given), "--from-defaults"])
    assert ingest_command._config(args).demo == DemoConfig(kind="scenes", num_images=3)
