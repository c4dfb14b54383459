"""Reading images and label maps the same way everywhere.

Every image goes through :func:`to_rgb`: EXIF orientation applied, any mode
(grey, palette, RGBA, CMYK, 16-bit, float) converted to ``uint8`` RGB. The
ingest checks run the same decoding, so an image that passed ingest loads in
every stage.
"""

from __future__ import annotations

import errno
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from wsss_core.store.atomic import write_png_atomic

# EXIF orientation tag value -> the transpose that shows the image upright
# (the same table as ``PIL.ImageOps.exif_transpose``).
ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EXIF_ORIENTATION_TAG = 0x0112
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# What reading an image raises when the file is at fault: missing, truncated, corrupt, not an
# image, a decompression bomb. Ingest quarantines such files; training leaves them out.
IMAGE_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
# OSErrors that are the machine's, whatever the file: out of memory, too many open
# files, a full, over-quota or read-only disk.
MACHINE_ERRNOS = frozenset(
    {errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.EDQUOT, errno.EROFS}
)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when absent or invalid."""
    try:
        value = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (TypeError, ValueError, OSError, SyntaxError):
        return 1
    return value if 1 <= value <= 8 else 1


def orient(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` transposed as EXIF ``orientation`` says (returned unchanged for 1)."""
    method = ORIENTATION_TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def to_rgb(image: Image.Image) -> np.ndarray:
    """``uint8 [H, W, 3]`` from an opened image: EXIF orientation applied, any mode converted."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_GREY_MODES:
        # 16/32-bit or float grey: scale to 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
        low = min(float(array.min()), 0.0)
        peak = max(float(array.max()) - low, 1.0)
        image = Image.fromarray(((array - low) * (255.0 / peak)).astype(np.uint8))
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels keep their colour channels (no compositing): what
        # a network would see had the alpha channel simply been dropped.
        image = image.convert("RGBA")
    return np.array(image.convert("RGB"), dtype=np.uint8)


def is_decode_error(error: BaseException) -> bool:
    """True when ``error``, raised reading an image, is the file's fault (not the machine's)."""
    if isinstance(error, OSError) and error.errno in MACHINE_ERRNOS:
        return False
    return isinstance(error, IMAGE_DECODE_ERRORS)


def load_rgb(path: Path | str) -> np.ndarray:
    """An image as ``uint8 [H, W, 3]``, EXIF orientation applied, any mode converted to RGB."""
    with Image.open(path) as image:
        return to_rgb(image)


def load_label_map(path: Path | str) -> np.ndarray:
    """A label map (``uint8 [H, W]``); palette PNGs give their indices, not colours."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode not in ("L", "P"):
            raise ValueError(
                f"{path}: label map must be a single-channel or palette PNG, got mode {image.mode}"
            )
        return np.asarray(image, dtype=np.uint8)


def label_map_image(labels: np.ndarray, palette: list[int] | None = None) -> Image.Image:
    """A label map as a PIL image (palette mode when ``palette`` is given)."""
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="L")
    if palette is not None:
        image = image.convert("P")
        image.putpalette(palette)
    return image


def label_map_png(labels: np.ndarray, palette: list[int] | None = None) -> bytes:
    """The PNG bytes :func:`save_label_map` writes (to hash or store them)."""
    buffer = io.BytesIO()
    label_map_image(labels, palette).save(buffer, format="PNG")
    return buffer.getvalue()


def save_label_map(path: Path, labels: np.ndarray, palette: list[int] | None = None) -> None:
    """Write a label map as PNG (palette PNG when ``palette`` is given), atomically."""
    write_png_atomic(path, label_map_image(labels, palette))


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
