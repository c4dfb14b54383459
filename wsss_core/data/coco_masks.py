"""COCO segmentations to masks, without pycocotools.

* polygons (``[[x1, y1, x2, y2, ...], ...]``): filled with Pillow's ``ImageDraw``;
* uncompressed RLE (``{"counts": [int, ...], "size": [h, w]}``);
* compressed RLE (``{"counts": "<string>", "size": [h, w]}``), decoded here.

RLE, as in COCO's ``maskApi.c``: run lengths over the mask in column-major
(Fortran) order, alternating 0s and 1s and starting with a run of 0s. The
compressed string stores each count as little-endian groups of 5 bits, one
character per group (``chr(48 + group)``, bit 0x20 set when another group
follows, bit 0x10 of the last group the sign); from the fourth count on, what
is stored is the difference to the count two places earlier.

Only decoding lives here: ingest never writes RLE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def rle_counts_from_string(text: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    counts: list[int] = []
    position, length = 0, len(text)
    while position < length:
        value, shift, more = 0, 0, True
        while more:
            if position >= length:
                raise ValueError("compressed RLE string ends inside a count")
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"character {text[position]!r} is not compressed RLE")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_decode(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """``bool [height, width]`` from run lengths (column-major, starting with 0s)."""
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any():
        raise ValueError("RLE counts must be non-negative integers")
    if int(runs.sum()) != height * width:
        raise ValueError(f"RLE covers {int(runs.sum())} pixels, size says {height}x{width}")
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape(width, height).T


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """``bool [height, width]``: the union of filled polygons (x, y pixel coordinates)."""
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        points = [float(v) for v in polygon]
        if len(points) < 6 or len(points) % 2:
            raise ValueError(f"a polygon needs >= 3 (x, y) pairs, got {len(points)} numbers")
        draw.polygon(list(zip(points[0::2], points[1::2], strict=True)), fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Any COCO ``segmentation`` value as ``bool [height, width]``; ValueError if malformed."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size", [height, width])
        if list(size) != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image entry's {[height, width]}")
        counts = segmentation["counts"]
        if isinstance(counts, str | bytes):
            counts = rle_counts_from_string(counts)
        return rle_decode(counts, height, width)
    raise ValueError(f"unknown segmentation format {type(segmentation).__name__}")
