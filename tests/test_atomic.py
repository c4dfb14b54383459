"""store/atomic.py: each typed writer round-trips, and a failing write leaves the old file alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from wsss_core.store.atomic import (
    save_figure_atomic,
    save_torch_atomic,
    write_bytes_atomic,
    write_parquet_atomic,
    write_png_atomic,
    write_text_atomic,
)


def _figure() -> Figure:
    figure = Figure(figsize=(1, 1))
    figure.add_subplot().plot([0, 1], [1, 0])
    return figure


def test_every_writer_round_trips(tmp_path: Path):
    write_bytes_atomic(tmp_path / "a.bin", b"\x00\xff")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xff"

    write_text_atomic(tmp_path / "a.txt", "zürich\nline two\n")
    assert (tmp_path / "a.txt").read_bytes() == "zürich\nline two\n".encode()

    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_png_atomic(tmp_path / "a.png", Image.fromarray(pixels, mode="L"), compress_level=1)
    with Image.open(tmp_path / "a.png") as image:
        assert image.format == "PNG"
        np.testing.assert_array_equal(np.asarray(image), pixels)

    save_figure_atomic(tmp_path / "plot.png", _figure(), dpi=50)
    with Image.open(tmp_path / "plot.png") as image:
        assert image.format == "PNG"  # the format comes from the suffix, not the temp name

    table = pa.table({"x": [1, 2, 3]})
    write_parquet_atomic(tmp_path / "t.parquet", table, compression="zstd")
    assert pq.read_table(tmp_path / "t.parquet").equals(table)

    save_torch_atomic(tmp_path / "w.pt", {"weight": torch.arange(4.0)})
    loaded = torch.load(tmp_path / "w.pt", weights_only=True)
    assert torch.equal(loaded["weight"], torch.arange(4.0))

    # Every file keeps the usual mode, not mkstemp's private 0600, and no temporary is left.
    assert all(path.stat().st_mode & 0o044 for path in tmp_path.iterdir())
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]


class _Explodes:
    """Stands in for an object whose own write fails halfway (disk full)."""

    def __init__(self, method: str) -> None:
        def fail(target: str, *args: object, **kwargs: object) -> None:
            Path(target).write_bytes(b"half")  # something reached the temporary file
            raise OSError("disk full")

        setattr(self, method, fail)


FAILING_WRITES: dict[str, Callable[[Path], None]] = {
    "png": lambda path: write_png_atomic(path, _Explodes("save")),  # type: ignore[arg-type]
    "figure": lambda path: save_figure_atomic(path, _Explodes("savefig"), dpi=50),  # type: ignore[arg-type]
    "parquet": lambda path: write_parquet_atomic(path, "not a table"),  # type: ignore[arg-type]
    "torch": lambda path: save_torch_atomic(path, {"unpicklable": lambda: None}),
}


@pytest.mark.parametrize("kind", sorted(FAILING_WRITES))
def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, kind: str):
    target = tmp_path / "out.file"
    write_bytes_atomic(target, b"previous version")
    with pytest.raises(Exception):  # noqa: B017 - each writer fails in its own way
        FAILING_WRITES[kind](target)
    assert target.read_bytes() == b"previous version"
    assert [path.name for path in tmp_path.iterdir()] == ["out.file"]
