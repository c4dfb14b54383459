"""Tests for the synthetic multi-digit demo dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from demo_checks import EIGHT_CONNECTED, all_files, assert_labels_match_masks, dataset_rows
from PIL import Image
from scipy import ndimage

from wsss_core.data import demo
from wsss_core.data.demo import DEMO_CLASS_NAMES, DemoDataset, generate_demo_dataset

LUMA = np.array([0.299, 0.587, 0.114])


def _load(dataset: DemoDataset, image_id: str) -> tuple[Image.Image, Image.Image]:
    image = Image.open(dataset.images_dir / f"{image_id}.png")
    mask = Image.open(dataset.masks_dir / f"{image_id}.png")
    return image, mask


def _label_ids(row: dict[str, str]) -> set[int]:
    return {DEMO_CLASS_NAMES.index(name) for name in row["labels"].split(";") if name}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    out_dir = tmp_path_factory.mktemp("demo")
    return generate_demo_dataset(out_dir, num_images=40, seed=3, max_digits=4)


def test_layout_and_class_list(dataset: DemoDataset) -> None:
    assert dataset.classes_txt.read_text().splitlines() == list(DEMO_CLASS_NAMES)
    assert tuple(f"digit_{d}" for d in range(10)) == DEMO_CLASS_NAMES
    assert dataset.labels_csv.read_text().splitlines()[0] == "image_id,labels,split"
    rows = dataset_rows(dataset)
    assert [row["image_id"] for row in rows] == [f"demo_{i:05d}" for i in range(40)]
    assert len(list(dataset.images_dir.glob("*.png"))) == 40
    assert len(list(dataset.masks_dir.glob("*.png"))) == 40
    assert not list(dataset.root.rglob(".*.tmp"))


def test_images_and_masks_format(dataset: DemoDataset) -> None:
    for row in dataset_rows(dataset):
        image, mask = _load(dataset, row["image_id"])
        assert image.mode == "RGB" and image.size == (128, 128)
        assert mask.mode == "L" and mask.size == (128, 128)
        values = set(np.unique(np.asarray(mask)).tolist())
        assert values <= set(range(11)) | {255}


def test_labels_match_masks(dataset: DemoDataset) -> None:
    assert_labels_match_masks(dataset, DEMO_CLASS_NAMES)


def test_digit_edges_are_mostly_ignored(dataset: DemoDataset) -> None:
    # Anti-aliased borders become 255; only where the upscaled stroke edge is steep
    # does a digit touch plain background directly.
    ignored = total = 0
    for row in dataset_rows(dataset):
        mask = np.asarray(_load(dataset, row["image_id"])[1])
        foreground = (mask > 0) & (mask < 255)
        border = ndimage.binary_dilation(foreground) & ~foreground
        ignored += int((mask[border] == 255).sum())
        total += int(border.sum())
    assert ignored > 0.9 * total


def test_split_fractions(dataset: DemoDataset) -> None:
    splits = [row["split"] for row in dataset_rows(dataset)]
    assert set(splits) <= {"train", "val"}
    assert splits.count("val") == dataset.num_val == 8  # round(40 * 0.2)
    assert splits.count("train") == dataset.num_train == 32
    assert dataset.num_images == 40


def test_background_is_textured_and_digits_contrast(dataset: DemoDataset) -> None:
    for row in dataset_rows(dataset):
        image, mask = _load(dataset, row["image_id"])
        luma = np.asarray(image, np.float64) @ LUMA
        mask = np.asarray(mask)
        assert luma[mask == 0].std() > 6.0, "background must not be flat"
        for value in set(np.unique(mask).tolist()) - {0, 255}:
            components, count = ndimage.label(mask == value, structure=EIGHT_CONNECTED)
            for index in range(1, count + 1):
                piece = components == index
                ring = ndimage.binary_dilation(piece, iterations=3) & (mask == 0)
                if piece.sum() >= 30 and ring.sum() >= 20:
                    assert abs(luma[piece].mean() - luma[ring].mean()) > 25.0


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kwargs = {"num_images": 6, "image_size": 64}
    generate_demo_dataset(tmp_path / "a", seed=7, **kwargs)
    generate_demo_dataset(tmp_path / "b", seed=7, **kwargs)
    generate_demo_dataset(tmp_path / "c", seed=8, **kwargs)
    first, second, other = (all_files(tmp_path / name) for name in "abc")
    assert first == second
    assert first.keys() == other.keys()
    assert first["images/demo_00000.png"] != other["images/demo_00000.png"]
    assert first["labels.csv"] != other["labels.csv"]


def test_rerun_with_fewer_images_removes_stale_files(tmp_path: Path) -> None:
    generate_demo_dataset(tmp_path, num_images=5, image_size=48)
    dataset = generate_demo_dataset(tmp_path, num_images=2, image_size=48)
    assert sorted(p.name for p in dataset.images_dir.iterdir()) == [
        "demo_00000.png",
        "demo_00001.png",
    ]
    assert sorted(p.name for p in dataset.masks_dir.iterdir()) == [
        "demo_00000.png",
        "demo_00001.png",
    ]
    assert len(dataset_rows(dataset)) == 2


@pytest.mark.parametrize(("image_size", "digits"), [(32, 5), (64, 5), (96, 1)])
def test_extreme_settings_still_consistent(tmp_path: Path, image_size: int, digits: int) -> None:
    dataset = generate_demo_dataset(
        tmp_path, num_images=8, image_size=image_size, min_digits=digits, max_digits=digits
    )
    for row in dataset_rows(dataset):
        image, mask = _load(dataset, row["image_id"])
        assert image.size == (image_size, image_size)
        present = set(np.unique(np.asarray(mask)).tolist()) - {0, 255}
        assert present == {k + 1 for k in _label_ids(row)}
        assert 1 <= len(present) <= digits


def test_val_canvases_use_their_own_mnist_digits() -> None:
    pools = demo._digit_pools(seed=0)
    assert not set(pools["train"].tolist()) & set(pools["val"].tolist())
    assert len(pools["train"]) + len(pools["val"]) == 5000


def test_single_image_goes_to_train(tmp_path: Path) -> None:
    dataset = generate_demo_dataset(tmp_path, num_images=1, image_size=32, val_fraction=0.9)
    assert (dataset.num_train, dataset.num_val) == (1, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_images": 0}, "num_images"),
        ({"image_size": 31}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"min_digits": 0}, "min_digits"),
        ({"min_digits": 3, "max_digits": 2}, "min_digits"),
        ({"max_digits": 6}, "max_digits"),
    ],
)
def test_argument_validation(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_demo_dataset(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "images").exists(), "nothing is written for bad arguments"


def _occlusion_mask(placed: list[demo._Digit]) -> tuple[np.ndarray, set[int]]:
    canvas = np.full((24, 24, 3), 128.0, np.float32)
    mask, owner = demo._composite(np.random.default_rng(0), canvas, placed)
    return mask, demo._finalise_labels(mask, owner, placed)


def test_hidden_digit_is_dropped_and_ignored() -> None:
    # A "3" covered by a "7" except for its first column: 20 px < MIN_VISIBLE_PIXELS.
    under = demo._Digit(3, np.ones((20, 20), np.float32), 0, 0)
    over = demo._Digit(7, np.ones((20, 20), np.float32), 0, 1)
    mask, visible = _occlusion_mask([under, over])
    assert visible == {7}
    assert (mask[:20, 0] == 255).all()
    assert (mask[:20, 1:21] == 8).all()


def test_occlusion_slivers_are_ignored() -> None:
    # A "7" with a 2x2 hole lies over a "3": the 3 keeps a 6-column strip (visible)
    # and a 4-pixel island in the hole (a sliver -> ignore).
    over_alpha = np.ones((20, 14), np.float32)
    over_alpha[9:11, 5:7] = 0.0
    under = demo._Digit(3, np.ones((20, 20), np.float32), 0, 0)
    over = demo._Digit(7, over_alpha, 0, 6)
    mask, visible = _occlusion_mask([under, over])
    assert visible == {3, 7}
    assert (mask[:20, :6] == 4).all()
    assert (mask[9:11, 11:13] == 255).all()
    assert (mask == 8).sum() == 20 * 14 - 4
