"""Numpy arrays in Parquet cells: raw little-endian bytes plus their shape.

Parquet's zstd compression does the compacting; storing raw bytes keeps reads
a zero-copy ``np.frombuffer`` and lets any Arrow reader decode a cell with
only the ``shape`` column and the dtype written in the table's metadata.
"""

from __future__ import annotations

import numpy as np


def encode(array: np.ndarray, dtype: np.dtype | type) -> bytes:
    """Bytes of ``array`` cast to ``dtype`` (C order, little endian)."""
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def decode(data: bytes, shape: tuple[int, ...] | list[int], dtype: np.dtype | type) -> np.ndarray:
    """Inverse of :func:`encode`; raises ValueError when the byte count and shape disagree."""
    dtype = np.dtype(dtype).newbyteorder("<")
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"cell holds {len(data)} bytes, shape {tuple(shape)} needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(tuple(shape)).astype(dtype.newbyteorder("="))


def downsample_mean(maps: np.ndarray, stride: int) -> np.ndarray:
    """``[K, H, W]`` -> ``[K, ceil(H/s), ceil(W/s)]``: the mean of each ``s x s`` block.

    Edge blocks are completed by repeating the last row / column.
    """
    if stride == 1:
        return maps
    channels, height, width = maps.shape
    rows, cols = -(-height // stride), -(-width // stride)
    padded = np.pad(
        maps, ((0, 0), (0, rows * stride - height), (0, cols * stride - width)), mode="edge"
    )
    blocks = padded.reshape(channels, rows, stride, cols, stride)
    return blocks.mean(axis=(2, 4), dtype=np.float32)


def _taps(size: int, stored: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation taps from block centres back to full-resolution pixels.

    Pixels outside the first / last block centre are extrapolated along the
    edge slope (clamping would flatten a peak that sits at the border).
    """
    position = (np.arange(size) + 0.5) / stride - 0.5
    if stored == 1:
        zeros = np.zeros(size, np.int64)
        return zeros, zeros, np.zeros(size, np.float32)
    lower = np.clip(np.floor(position), 0, stored - 2).astype(np.int64)
    return lower, lower + 1, (position - lower).astype(np.float32)


def upsample_linear(maps: np.ndarray, height: int, width: int, stride: int) -> np.ndarray:
    """Inverse of :func:`downsample_mean` up to smoothing: bilinear from block centres."""
    if maps.shape[1:] == (height, width):
        return maps
    maps = maps.astype(np.float32, copy=False)
    lower, upper, weight = _taps(height, maps.shape[1], stride)
    weight = weight[None, :, None]
    rows = maps[:, lower] * (1 - weight) + maps[:, upper] * weight
    lower, upper, weight = _taps(width, maps.shape[2], stride)
    full = rows[:, :, lower] * (1 - weight) + rows[:, :, upper] * weight
    return np.maximum(full, 0.0, out=full)
