"""One writer per workspace: a second run fails at once with a clear message.

An advisory ``flock`` on ``<workspace>/.wsss.lock``: the operating system drops it
when the holder exits, however it exits, so a killed run never leaves a stale lock.

The holder may enter the lock again: a flow that calls a part of the pipeline
as a sub-flow (``pseudo_label`` -> ``label``) keeps one lock for the whole run
instead of releasing it in between. "The holder" is the execution context that
took it (a ``ContextVar``: the flow, its sub-flows and the threads Prefect
starts for them), not the whole process, so an unrelated thread is refused.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO

from wsss_core.store.workspace import Workspace


class WorkspaceLocked(RuntimeError):
    """Another process is writing to this workspace."""


# Lock file path -> (open handle holding the flock, nesting depth) in this process.
_held: dict[str, tuple[IO[str], int]] = {}
_held_guard = threading.Lock()
# Lock paths this execution context holds: who may enter again.
_owned: ContextVar[frozenset[str]] = ContextVar("wsss_owned_locks", default=frozenset())


@contextmanager
def workspace_lock(workspace: Workspace, purpose: str) -> Iterator[None]:
    """Hold the workspace's lock for the duration; raise :class:`WorkspaceLocked` if taken."""
    workspace.root.mkdir(parents=True, exist_ok=True)
    path = str((workspace.root / ".wsss.lock").resolve())
    with _held_guard:
        entry = _held.get(path)
        if entry is None:
            _held[path] = (_acquire(path, workspace, purpose), 1)
        elif path in _owned.get():
            _held[path] = (entry[0], entry[1] + 1)
        else:
            raise WorkspaceLocked(
                f"{workspace.root} is in use (another run in this process, pid {os.getpid()}); "
                "wait for it to finish"
            )
    token = _owned.set(_owned.get() | {path})
    try:
        yield
    finally:
        _owned.reset(token)
        with _held_guard:
            handle, depth = _held[path]
            if depth == 1:
                del _held[path]
                handle.close()  # closing releases the lock
            else:
                _held[path] = (handle, depth - 1)


def _acquire(path: str, workspace: Workspace, purpose: str) -> IO[str]:
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise WorkspaceLocked(
            f"{workspace.root} is in use ({holder}); wait for it to finish"
        ) from None
    handle.seek(0)
    handle.truncate()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    handle.write(f"{purpose}, pid {os.getpid()}, since {stamp}")
    handle.flush()
    return handle
