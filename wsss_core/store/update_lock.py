"""Read-modify-write of one shared file, one writer at a time, across processes.

``reviews.parquet`` and the manifest are rewritten whole from what was just
read, so two writers at once (two processes calling the library, or two
threads) would each drop the other's rows. :func:`exclusive_update` holds an
advisory ``flock`` on ``.<name>.lock`` next to the file for the whole update;
the operating system drops it when the holder exits, however it exits. Unlike
the workspace lock (``store/lock.py``: a run fails at once when another holds
it), it waits: an update takes milliseconds.

It is a lock file of its own, so holding the workspace lock changes nothing
for it. ``flock`` belongs to an open file description, so a second ``open``
in this process would wait for the first: this process's threads queue on a
re-entrant lock first and only the outermost holder takes the ``flock``, which
lets a thread that holds the update enter it again (``record_reviews`` ->
``_append``). Nested updates of two files always take them in one order,
``reviews.parquet`` before the manifest, so two holders never wait on each other.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK_SUFFIX = ".lock"

# Lock file -> the re-entrant lock this process's threads queue on.
_guards: dict[str, threading.RLock] = {}
_guards_guard = threading.Lock()
# Lock file -> the open handle holding its flock; touched only by the guard's holder.
_handles: dict[str, IO[str]] = {}


def update_lock_path(path: Path) -> Path:
    """The lock file of ``path``: hidden, next to it, never swept (not a ``.tmp``)."""
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


@contextmanager
def exclusive_update(path: Path) -> Iterator[None]:
    """Hold ``path``'s update lock for the duration, waiting while another holder has it."""
    lock_file = update_lock_path(Path(path))
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    key = str(lock_file.resolve())
    with _guards_guard:
        guard = _guards.setdefault(key, threading.RLock())
    with guard:
        outermost = key not in _handles
        if outermost:
            _handles[key] = _flocked(key)
        try:
            yield
        finally:
            if outermost:
                _handles.pop(key).close()  # closing releases the flock


def _flocked(lock_file: str) -> IO[str]:
    handle = open(lock_file, "a")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except BaseException:
        handle.close()
        raise
    return handle
