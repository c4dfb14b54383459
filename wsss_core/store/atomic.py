"""Write-then-rename: a crash or kill leaves the old file or the new one, never half.

Every file the pipeline writes goes through :func:`atomic_write`, mostly by way
of one typed helper per kind: bytes, text, PNG, matplotlib figure, Parquet,
torch payload. A write that fails leaves the previous file and no temporary.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    from matplotlib.figure import Figure
    from PIL import Image

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


def write_bytes_atomic(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp_name: Path(tmp_name).write_bytes(data))


def write_text_atomic(path: Path, text: str) -> None:
    """UTF-8, newlines as given on every platform: workspace files move between machines."""
    atomic_write(
        path, lambda tmp_name: Path(tmp_name).write_text(text, encoding="utf-8", newline="")
    )


def write_png_atomic(path: Path, image: Image.Image, **options: Any) -> None:
    """``image.save`` as PNG; ``options`` are Pillow's PNG options (``compress_level``)."""
    atomic_write(path, lambda tmp_name: image.save(tmp_name, format="PNG", **options))


def save_figure_atomic(path: Path, figure: Figure, dpi: int) -> None:
    """A matplotlib figure in the format ``path``'s suffix names (the temporary name has none)."""
    file_format = path.suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp_name: figure.savefig(tmp_name, dpi=dpi, format=file_format))


def write_parquet_atomic(path: Path, table: pa.Table, **options: Any) -> None:
    """``pyarrow.parquet.write_table`` with ``options``; see ``parquet_io.write_table``."""
    import pyarrow.parquet as pq

    atomic_write(path, lambda tmp_name: pq.write_table(table, tmp_name, **options))


def save_torch_atomic(path: Path, payload: Any) -> None:
    """``torch.save``; torch is imported here only, so the store stays light without it."""
    import torch

    atomic_write(path, lambda tmp_name: torch.save(payload, tmp_name))


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
