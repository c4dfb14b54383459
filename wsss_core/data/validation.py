"""Checks every ingested image and ground-truth mask goes through, and the quarantine reasons.

A failed check raises :class:`Rejected`; its ``reason`` ("<category>: <detail>")
names the file and lands in ``quarantine.parquet``. Categories:

=========================== ===================================================
category                    when
=========================== ===================================================
invalid id                  empty, ``.``/``..``, path separators, control chars
duplicate id                a second item with an id already seen in this scan
path escapes root           ``..`` or an absolute path leaving the dataset root
missing file                the image (or a required annotation file) is absent
empty file                  zero bytes
image too large             width x height over ``max_pixels`` (decompression bomb)
unreadable image            not an image, corrupt or truncated
unknown class               a label name outside a fixed class list
malformed row               a CSV / JSONL row that does not parse
malformed annotation        an XML / JSON entry that does not parse
unreadable ground truth     mask missing its decoder, or not single-channel
ground truth size mismatch  mask size is neither the image's size nor its
                            stored (pre-EXIF) size
invalid ground truth        mask values outside ``0..C`` and ``255``
=========================== ===================================================

Converted, not rejected: grey, palette, RGBA, CMYK, 16-bit and float images
(:func:`wsss_core.data.images.to_rgb` does the same conversion in every stage).

EXIF orientation: sizes in the manifest are after orientation. Ground truth is
expected on the image's *stored* pixel grid, as annotation tools that ignore
EXIF draw it; a mask whose size is the oriented size is taken as already
oriented (only possible to tell for non-square images). A mask that needs the
image's orientation applied is written, oriented, to
``<workspace>/ground_truth/<image_id>.png``, so image and mask always agree.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_core.data.images import (
    IMAGE_DECODE_ERRORS,
    exif_orientation,
    orient,
    save_label_map,
    voc_palette,
)
from wsss_core.data.manifest import file_sha256

INVALID_ID = "invalid id"
DUPLICATE_ID = "duplicate id"
PATH_ESCAPES_ROOT = "path escapes root"
MISSING_FILE = "missing file"
EMPTY_FILE = "empty file"
IMAGE_TOO_LARGE = "image too large"
UNREADABLE_IMAGE = "unreadable image"
UNKNOWN_CLASS = "unknown class"
MALFORMED_ROW = "malformed row"
MALFORMED_ANNOTATION = "malformed annotation"
UNREADABLE_GT = "unreadable ground truth"
GT_SIZE_MISMATCH = "ground truth size mismatch"
INVALID_GT = "invalid ground truth"

IGNORE = 255
MAX_CLASSES = 253  # label maps are uint8: 0 background, k + 1 class k, 255 ignore
# Modes Pillow converts to RGB as they are; others are tried once and rejected if that fails.
CONVERTED_MODES = frozenset(
    {"1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LA", "La", "PA", "LAB",
     "HSV", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
)  # fmt: skip


class Rejected(Exception):
    """An item that fails a check; ``reason`` is what quarantine.parquet records."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(f"{category}: {detail}")
        self.category = category
        self.detail = detail

    @property
    def reason(self) -> str:
        return f"{self.category}: {self.detail}"


def check_image_id(image_id: str, origin: str) -> None:
    """Ids name files in the workspace (``masks/<id>.png``): no paths, no control characters."""
    if not image_id or image_id in (".", "..") or image_id != image_id.strip():
        raise Rejected(INVALID_ID, f"{origin}: {image_id!r} is empty or padded")
    bad = [c for c in image_id if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if bad or len(image_id.encode()) > 200:
        raise Rejected(INVALID_ID, f"{origin}: {image_id!r} cannot name a file")


def resolve_inside(root: Path, relative: str | Path, origin: str) -> Path:
    """``root / relative`` made absolute, refusing ``..`` or absolute paths that leave ``root``.

    The check is lexical: symbolic links inside the root are followed on purpose
    (datasets often link their image folder to shared storage).
    """
    root = Path(os.path.abspath(root))
    candidate = Path(os.path.normpath(root / relative))
    if candidate != root and root not in candidate.parents:
        raise Rejected(PATH_ESCAPES_ROOT, f"{origin}: {str(relative)!r} leaves {root}")
    return candidate


@dataclass(frozen=True)
class ImageInfo:
    width: int  # after EXIF orientation
    height: int
    stored_size: tuple[int, int]  # (width, height) as stored in the file
    orientation: int
    mode: str
    sha256: str


def file_checks(path: Path | None, origin: str) -> int:
    """Size in bytes of an existing, non-empty file; rejects missing and zero-byte files."""
    if path is None or not path.is_file():
        raise Rejected(MISSING_FILE, f"{origin}: no image file {path}")
    size = path.stat().st_size
    if size == 0:
        raise Rejected(EMPTY_FILE, f"{path} has 0 bytes")
    return size


def inspect_image(
    path: Path, max_pixels: int, decode: bool = True, sha256: str | None = None
) -> ImageInfo:
    """Open ``path``, check its size against ``max_pixels``, decode it fully when ``decode``.

    ``decode=False`` reads the header only: for a file whose content hash equals
    one that passed before.
    """
    digest = sha256 or file_sha256(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise Rejected(
                        IMAGE_TOO_LARGE,
                        f"{path} is {width}x{height} = {width * height} pixels "
                        f"(limit max_pixels={max_pixels})",
                    )
                mode = image.mode
                orientation = exif_orientation(image)
                if decode:
                    image.load()
                    if mode not in CONVERTED_MODES:
                        image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise Rejected(IMAGE_TOO_LARGE, f"{path}: {error}") from error
    except IMAGE_DECODE_ERRORS as error:
        raise Rejected(UNREADABLE_IMAGE, f"{path}: cannot decode ({error})") from error
    oriented = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return ImageInfo(oriented[0], oriented[1], (width, height), orientation, mode, digest)


def _read_mask_file(path: Path) -> Image.Image:
    if not path.is_file():
        raise Rejected(UNREADABLE_GT, f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            own = exif_orientation(image)
            image = orient(image, own)  # a mask's own EXIF, as load_label_map does
    except IMAGE_DECODE_ERRORS as error:
        raise Rejected(UNREADABLE_GT, f"{path}: cannot decode ({error})") from error
    if image.mode not in ("L", "P"):
        raise Rejected(
            UNREADABLE_GT, f"{path}: mode {image.mode}; expected a single-channel or palette PNG"
        )
    return image


def check_ground_truth(
    info: ImageInfo,
    num_classes: int,
    out_path: Path,
    gt_path: Path | None = None,
    gt_array: np.ndarray | None = None,
) -> str:
    """Validate a mask (file or array) against its image; returns the ``gt_uri`` to record.

    A file that fits as it is keeps its own path; an array, or a file that needs
    the image's EXIF orientation applied, is written to ``out_path``.
    """
    name = str(gt_path) if gt_path is not None else f"ground truth of {out_path.stem}"
    if gt_path is not None:
        image = _read_mask_file(gt_path)
    else:
        array = np.asarray(gt_array)
        if array.ndim != 2 or array.dtype != np.uint8:
            raise Rejected(
                UNREADABLE_GT, f"{name}: expected uint8 [H, W], got {array.dtype} {array.shape}"
            )
        image = Image.fromarray(array)
    size = image.size
    oriented_size = (info.width, info.height)
    if info.orientation != 1 and size == info.stored_size:
        image, needs_writing = orient(image, info.orientation), True
    elif size == oriented_size:
        needs_writing = gt_path is None
    else:
        detail = f"{name} is {size[0]}x{size[1]}, image is {info.width}x{info.height}"
        raise Rejected(GT_SIZE_MISMATCH, detail)
    labels = np.asarray(image, dtype=np.uint8)
    counts = np.bincount(labels.ravel(), minlength=256)
    counts[: num_classes + 1] = 0
    counts[IGNORE] = 0
    if counts.any():
        bad = np.flatnonzero(counts)[:8].tolist()
        raise Rejected(INVALID_GT, f"{name} has values {bad} outside 0..{num_classes} and {IGNORE}")
    if not needs_writing:
        return str(gt_path)
    save_label_map(out_path, labels, voc_palette())
    return str(out_path)
