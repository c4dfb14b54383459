"""Test helpers that act as Label Studio's editor does: a real server, its own brush encoder.

The strokes are encoded by Label Studio's own code (``label_studio_sdk``'s
``encode_rle``, run in the server's Python), not by ours, so a test of our
decoder cannot agree with itself by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wsss_core.config import ReviewConfig
from wsss_core.review.labelstudio_server import LabelStudioMissing, find_label_studio


def label_studio_or_skip(config: ReviewConfig) -> Path:
    """The label-studio command (`make test` installs it; a missing one fails under CI)."""
    try:
        return find_label_studio(config)
    except LabelStudioMissing as error:
        if os.environ.get("CI"):
            pytest.fail(f"{error} (`make test` installs it)")
        pytest.skip(str(error))


def server_python(command: Path) -> Path:
    """The Python the label-studio command runs on (its venv's)."""
    first_line = Path(os.path.realpath(command)).read_text().splitlines()[0]
    return Path(first_line.removeprefix("#!").strip())


def editor_rle(command: Path, rgba: np.ndarray) -> list[int]:
    """``rgba`` ([H, W, 4] uint8) as the editor's brush stream, by Label Studio's encoder."""
    script = (
        "import json, sys, numpy as np\n"
        "from label_studio_sdk.converter.brush import encode_rle\n"
        "values = np.array(json.load(sys.stdin), dtype=np.uint8)\n"
        "print(json.dumps([int(v) for v in encode_rle(values)]))\n"
    )
    done = subprocess.run(
        [str(server_python(command)), "-c", script],
        input=json.dumps(rgba.ravel().tolist()),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout)


def antialiased_stroke(
    height: int, width: int, centre: tuple[int, int], radius: float
) -> np.ndarray:
    """An RGBA disc like a brush stroke: opaque inside, alpha falling off over its rim."""
    rows, cols = np.mgrid[:height, :width]
    distance = np.hypot(rows - centre[0], cols - centre[1])
    alpha = np.clip((radius + 1.5 - distance) / 3.0, 0.0, 1.0)  # 3 px of partial alpha
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., 0] = 128  # the label's colour; only alpha decides the pixel
    rgba[..., 3] = np.round(alpha * 255).astype(np.uint8)
    return rgba
