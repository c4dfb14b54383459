"""Checks both demo datasets (digits and scenes) must pass: one layout, one ground-truth rule.

Test modules import it by name (pytest puts tests/ on the path).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from wsss_core.data import demo
from wsss_core.data.demo import DemoDataset

EIGHT_CONNECTED = np.ones((3, 3), bool)


def dataset_rows(dataset: DemoDataset) -> list[dict[str, str]]:
    with open(dataset.labels_csv, newline="") as handle:
        return list(csv.DictReader(handle))


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def mask_of(dataset: DemoDataset, image_id: str) -> np.ndarray:
    return np.asarray(Image.open(dataset.masks_dir / f"{image_id}.png"))


def assert_labels_match_masks(dataset: DemoDataset, class_names: Sequence[str]) -> None:
    """Every canvas's labels are exactly the classes in its mask, each visible enough.

    Slivers were turned into ignore, so no tiny piece of an object remains.
    """
    for row in dataset_rows(dataset):
        labels = {class_names.index(name) for name in row["labels"].split(";") if name}
        assert labels, "every canvas has at least one visible object"
        mask = mask_of(dataset, row["image_id"])
        present = set(np.unique(mask).tolist()) - {0, 255}
        assert present == {k + 1 for k in labels}
        for value in present:
            region = mask == value
            assert region.sum() >= demo.MIN_VISIBLE_PIXELS
            components, _ = ndimage.label(region, structure=EIGHT_CONNECTED)
            assert np.bincount(components.ravel())[1:].min() >= demo.MIN_SLIVER_PIXELS
