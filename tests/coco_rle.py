"""Tests' COCO RLE encoders: the inverses of ``data.coco_masks``' decoders, for fixtures.

Ingest only ever decodes RLE; these build the annotations the tests feed it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rle_counts_to_string(counts: Sequence[int]) -> str:
    """Encode run lengths as COCO's compressed RLE string (``rle_counts_from_string``'s inverse)."""
    out: list[str] = []
    for index, count in enumerate(counts):
        value = int(count) - (int(counts[index - 2]) if index > 2 else 0)
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            out.append(chr(group + 48))
    return "".join(out)


def rle_encode(mask: np.ndarray) -> list[int]:
    """Run lengths of a 2-D boolean mask (column-major, starting with 0s)."""
    flat = np.asarray(mask, bool).T.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return runs
