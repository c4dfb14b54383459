"""Reading images and label maps the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def load_rgb(path: Path | str) -> np.ndarray:
    """An image as ``uint8 [H, W, 3]``, EXIF orientation applied, any mode converted to RGB."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16/32-bit grey: scale to 8 bits instead of clipping.
            array = np.asarray(image, dtype=np.float64)
            peak = max(float(array.max()), 1.0)
            image = Image.fromarray((array * (255.0 / peak)).astype(np.uint8))
        return np.array(image.convert("RGB"), dtype=np.uint8)


def load_label_map(path: Path | str) -> np.ndarray:
    """A label map (``uint8 [H, W]``); palette PNGs give their indices, not colours."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode not in ("L", "P"):
            raise ValueError(
                f"{path}: label map must be a single-channel or palette PNG, got mode {image.mode}"
            )
        return np.asarray(image, dtype=np.uint8)


def save_label_map(path: Path, labels: np.ndarray, palette: list[int] | None = None) -> None:
    """Write a label map as PNG (palette PNG when ``palette`` is given), atomically."""
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="L")
    if palette is not None:
        image = image.convert("P")
        image.putpalette(palette)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (256 RGB triples; 255 is the ignore colour)."""
    palette: list[int] = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette.extend((red, green, blue))
    palette[255 * 3 : 256 * 3] = [224, 224, 192]
    return palette
