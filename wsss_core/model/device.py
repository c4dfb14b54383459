"""Device selection (CUDA when present, CPU otherwise, or what the user names) and CPU threads."""

from __future__ import annotations

import threading
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


# Callers inside cpu_threads now, and the process's own count to put back after the last.
_guard = threading.Lock()
_inside = 0
_process_count = 0


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """torch's intra-op CPU threads fixed at ``count`` for the calling thread, inside.

    The thread count changes how convolutions split their sums, so CAMs made
    with 1 and 2 threads differ in their last bits. Fixing it per computation
    makes a shard's maps the same whichever runner computes it: a thread of
    the flow's pool, or a Dask worker process (which Dask starts with one
    thread). Same CPU type assumed: oneDNN also picks its kernels by CPU.

    With torch's OpenMP backend the count is per thread once a thread has
    computed, but ``torch.set_num_threads`` also sets the count that threads
    starting later copy. So each caller sets its own thread's count, and the
    last one out puts the process's count back (a thread that first met torch
    while another shard was inside would otherwise leave ``count`` behind).
    """
    global _inside, _process_count
    before = torch.get_num_threads()  # also settles this thread's lazy thread setup
    with _guard:
        if _inside == 0:
            _process_count = before
        _inside += 1
        torch.set_num_threads(count)
    try:
        yield
    finally:
        with _guard:
            _inside -= 1
            torch.set_num_threads(_process_count if _inside == 0 else before)
