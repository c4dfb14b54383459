"""One writer per workspace: a second run fails at once with a clear message.

An advisory ``flock`` on ``<workspace>/.wsss.lock``: the operating system drops it
when the holder exits, however it exits, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from wsss_core.store.workspace import Workspace


class WorkspaceLocked(RuntimeError):
    """Another process is writing to this workspace."""


@contextmanager
def workspace_lock(workspace: Workspace, purpose: str) -> Iterator[None]:
    """Hold the workspace's lock for the duration; raise :class:`WorkspaceLocked` if taken."""
    workspace.root.mkdir(parents=True, exist_ok=True)
    path = workspace.root / ".wsss.lock"
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise WorkspaceLocked(
                f"{workspace.root} is in use ({holder}); wait for it to finish"
            ) from None
        handle.seek(0)
        handle.truncate()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        handle.write(f"{purpose}, pid {os.getpid()}, since {stamp}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
