"""Label Studio's brush masks: the run-length bit stream its editor reads and writes.

A brush region is an RGBA image of the task's size, flattened row by row
(``r, g, b, a`` per pixel) and packed as a bit stream, most significant bit
first:

* header: the value count (32 bits), the word size minus one (5 bits), and
  four run-length field widths minus one (4 bits each);
* then blocks until the count is reached: a flag bit (1 = one word repeated,
  0 = that many words follow), two bits choosing one of the four widths, the
  block length minus one in that width, then the word(s).

The stream is padded with zero bits to whole bytes; the editor sends it as a
list of byte values. Only the alpha channel matters here: the editor paints
strokes anti-aliased, so a pixel belongs to the region when its alpha is at
least :data:`STROKE_ALPHA_MIN` (half opaque), the rule a reviewer sees as the
stroke's edge. Masks we send are fully opaque or fully clear, so they come
back unchanged.
"""

from __future__ import annotations

import numpy as np

STROKE_ALPHA_MIN = 128  # alpha >= this: the pixel is inside the stroke
CHANNELS = 4  # RGBA
WORD_BITS = 8
RUN_WIDTHS = (3, 4, 8, 16)  # bits of the four block-length fields we write
MAX_RUN = 1 << RUN_WIDTHS[-1]


class BrushDecodeError(ValueError):
    """The bit stream is not a brush mask of the expected size."""


def _run_width_index(length: int) -> int:
    return next(i for i, width in enumerate(RUN_WIDTHS) if length <= 1 << width)


def encode_mask(mask: np.ndarray) -> list[int]:
    """The brush stream of a 2-D boolean mask: opaque white inside, clear outside."""
    if mask.ndim != 2:
        raise ValueError(f"a brush mask is 2-D, got shape {mask.shape}")
    values = np.repeat(np.where(mask.ravel(), 255, 0).astype(np.uint8), CHANNELS)
    fields: list[tuple[int, int]] = [(values.size, 32), (WORD_BITS - 1, 5)]
    fields += [(width - 1, 4) for width in RUN_WIDTHS]
    if values.size:
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        lengths = np.diff(np.r_[starts, values.size])
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            value = int(values[start])
            while length:  # runs longer than the widest field are split
                part = min(length, MAX_RUN)
                index = _run_width_index(part)
                fields += [(1, 1), (index, 2), (part - 1, RUN_WIDTHS[index]), (value, WORD_BITS)]
                length -= part
    bits = "".join(format(value, f"0{width}b") for value, width in fields)
    bits += "0" * (-len(bits) % 8)
    return list(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


class _BitReader:
    def __init__(self, data: list[int] | bytes) -> None:
        try:
            bits = np.unpackbits(np.asarray(data, dtype=np.uint8))
        except (TypeError, ValueError, OverflowError) as error:
            raise BrushDecodeError(f"brush data is not a list of bytes ({error})") from None
        self._bits = (bits + ord("0")).tobytes().decode("ascii")  # int(slice, 2) reads a field
        self._at = 0

    def read(self, width: int) -> int:
        end = self._at + width
        if end > len(self._bits):
            raise BrushDecodeError("brush data ends in the middle of a block")
        value = int(self._bits[self._at : end], 2)
        self._at = end
        return value


def decode_values(data: list[int] | bytes) -> np.ndarray:
    """Every value of the stream (RGBA, flattened), as uint8 (words wider than 8 bits clipped)."""
    reader = _BitReader(data)
    count = reader.read(32)
    word_bits = reader.read(5) + 1
    widths = [reader.read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint8)
    at = 0
    while at < count:
        repeated = reader.read(1)
        length = reader.read(widths[reader.read(2)]) + 1
        if at + length > count:
            raise BrushDecodeError(f"a block runs past the {count} values the header states")
        if repeated:
            out[at : at + length] = min(reader.read(word_bits), 255)
        else:
            out[at : at + length] = [min(reader.read(word_bits), 255) for _ in range(length)]
        at += length
    return out


def decode_mask(data: list[int] | bytes, height: int, width: int) -> np.ndarray:
    """The 2-D boolean mask of a brush stream for an image of ``height`` x ``width``."""
    values = decode_values(data)
    if values.size != height * width * CHANNELS:
        raise BrushDecodeError(
            f"brush data holds {values.size} values, not {height} x {width} x {CHANNELS}"
        )
    return values.reshape(height, width, CHANNELS)[..., 3] >= STROKE_ALPHA_MIN
