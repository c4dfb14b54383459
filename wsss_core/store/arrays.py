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
