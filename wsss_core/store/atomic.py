"""Write-then-rename: a crash or kill leaves the old file or the new one, never half."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _process_umask() -> int:
    """The umask, read without changing it where Linux allows (no window for other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)  # elsewhere: set-and-restore, once, at import
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_name)`` for a temporary file next to ``path``, fsync, rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp_name)
        # mkstemp makes the file private (0600); a workspace file gets the usual
        # mode, so reviewers' services and colleagues can read it.
        os.chmod(tmp_name, _FILE_MODE)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def remove_leftover_temp_files(directory: Path, recursive: bool = True) -> int:
    """Delete temporary files of writes killed before their rename (SIGKILL, power loss).

    Readers never look at them (their names start with a dot), they only take
    space. Call only while holding the workspace lock, when no write is in
    progress. Returns how many were removed.
    """
    if not directory.is_dir():
        return 0
    pattern = f".*{TEMP_SUFFIX}"
    found = directory.rglob(pattern) if recursive else directory.glob(pattern)
    removed = 0
    for path in found:
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
