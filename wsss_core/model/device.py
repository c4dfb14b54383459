"""Device selection (CUDA when present, CPU otherwise, or what the user names) and CPU threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks ``cuda`` when available; an unavailable CUDA request is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here")
    return device


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """torch's intra-op CPU threads fixed at ``count`` for the calling thread, inside.

    The thread count changes how convolutions split their sums, so CAMs made
    with 1 and 2 threads differ in their last bits. Fixing it per computation
    makes a shard's maps the same whichever runner computes it: a thread of
    the flow's pool, or a Dask worker process (which Dask starts with one
    thread). With torch's OpenMP backend the count is per thread once a thread
    has computed, so concurrent shards each set and restore their own.
    """
    before = torch.get_num_threads()  # also settles this thread's lazy thread setup
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
