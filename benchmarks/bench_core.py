"""Speed benchmarks of the core library, side by side with the peers it replaces.

Run from the repository root::

    .venv/bin/python benchmarks/bench_core.py            # full sizes
    .venv/bin/python benchmarks/bench_core.py --quick    # small sizes, seconds

Each section is a ``bench_*`` function returning rows; ``SECTIONS`` maps a
section name to a runner so new sections (region growing, CRF) plug into
``main`` without touching the others.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision import models

# Allow `python benchmarks/bench_core.py` from a checkout without installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_core.cam import class_activation_maps

Row = dict[str, str]


@dataclass(frozen=True)
class Sizes:
    """Problem sizes shared by the sections; ``--quick`` shrinks them."""

    batch: int
    image_size: int
    repeats: int


FULL = Sizes(batch=16, image_size=320, repeats=3)
QUICK = Sizes(batch=4, image_size=128, repeats=2)


# --------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    median: float
    best: float


def time_interleaved(
    calls: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, Timing]:
    """Median and best wall time in seconds of each call, after one untimed warm-up each.

    Rounds go round-robin over the calls, so background load and thermal drift
    spread over all of them instead of biasing whichever ran last.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(repeats + 1):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            if round_index > 0:
                times[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(v), min(v)) for name, v in times.items()}


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Print rows (dicts with the same keys) as an aligned text table."""
    print(f"\n## {title}")
    if not rows:
        print("(no rows)")
        return
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(row[h].ljust(w) for h, w in zip(headers, widths, strict=True)))


# --------------------------------------------------------------------------- CAM


def _theirs_maps(
    model: nn.Module, images: torch.Tensor, targets: list[list[int]], plus: bool
) -> np.ndarray:
    """pytorch-grad-cam as its users call it: one call per target slot for the batch.

    Returns maps ``[B, S, H, W]``.
    """
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = GradCAMPlusPlus if plus else GradCAM
    with cam_class(model=model, target_layers=[model.get_submodule("layer4")]) as cam:
        per_slot = [
            cam(input_tensor=images, targets=[ClassifierOutputTarget(t[j]) for t in targets])
            for j in range(len(targets[0]))
        ]
    model.zero_grad(set_to_none=True)  # it leaves parameter gradients behind
    return np.stack(per_slot, axis=1)


def _have_grad_cam() -> bool:
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        return False
    return True


def _min_max(maps: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's convention, ``(m - min) / (max - min)`` per map, zero-safe."""
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    return (maps - low) / np.where(span > 0, span, 1.0)


def bench_cam(sizes: Sizes, device: torch.device, targets_per_image: int = 3) -> list[Row]:
    """Our CAM / Grad-CAM / Grad-CAM++ vs a bare forward and pytorch-grad-cam.

    Same model (torchvision ResNet-50, random weights, eval, target ``layer4``),
    same images and targets for everyone. Calls are timed round-robin so load
    from other processes hits all of them alike.
    """
    torch.manual_seed(0)
    model = models.resnet50(weights=None).eval().to(device)
    images = torch.randn(sizes.batch, 3, sizes.image_size, sizes.image_size, device=device)
    generator = torch.Generator().manual_seed(0)
    targets = [
        torch.randperm(1000, generator=generator)[:targets_per_image].tolist()
        for _ in range(sizes.batch)
    ]

    def bare() -> None:
        with torch.no_grad():
            model(images)

    def ours(method: str) -> Callable[[], np.ndarray]:
        return lambda: np.stack(
            class_activation_maps(model, images, targets, method, target_layer="layer4")
        )

    def theirs(plus: bool) -> Callable[[], np.ndarray]:
        return lambda: _theirs_maps(model, images, targets, plus)

    channels_last = images.contiguous(memory_format=torch.channels_last)

    def bare_channels_last() -> None:
        with torch.no_grad():
            model(channels_last)

    calls: dict[str, Callable[[], object]] = {"bare": bare}
    if device.type == "cpu":  # ours feeds channels-last inputs on CPU: show that baseline too
        calls["bare channels_last"] = bare_channels_last
    calls.update({m: ours(m) for m in ("cam", "gradcam", "gradcampp")})
    # pytorch-grad-cam has no plain CAM; for a GAP + linear head Grad-CAM is the same map.
    peer_of = {"cam": "GradCAM", "gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus"}
    if _have_grad_cam():
        calls.update({"GradCAM": theirs(False), "GradCAMPlusPlus": theirs(True)})
    seconds = time_interleaved(calls, sizes.repeats, device)

    bare_s = seconds["bare"].median
    their_maps = {peer: calls[peer]() for peer in ("GradCAM", "GradCAMPlusPlus") if peer in calls}
    rows = [_cam_row("bare no_grad forward", seconds["bare"], bare_s, sizes.batch)]
    if "bare channels_last" in seconds:
        rows.append(
            _cam_row(
                "bare forward, channels_last input",
                seconds["bare channels_last"],
                bare_s,
                sizes.batch,
            )
        )
    for method, peer in peer_of.items():
        row = _cam_row(f"ours {method}", seconds[method], bare_s, sizes.batch)
        if peer in seconds:
            mine, their = calls[method](), their_maps[peer]
            row["peer"] = peer
            row["speed-up"] = f"{seconds[peer].median / seconds[method].median:.1f}x"
            row["max|diff|"] = f"{np.abs(mine - their).max():.1e}"
            row["max|diff| min-max"] = f"{np.abs(_min_max(mine) - _min_max(their)).max():.1e}"
        rows.append(row)
    for peer in ("GradCAM", "GradCAMPlusPlus"):
        if peer in seconds:
            rows.append(_cam_row(f"pytorch-grad-cam {peer}", seconds[peer], bare_s, sizes.batch))
    return rows


def _cam_row(name: str, timing: Timing, bare: float, batch: int) -> Row:
    """Throughput and ratios from the median; ``best s`` shows how noisy the machine was."""
    return {
        "method": name,
        "median s": f"{timing.median:.3f}",
        "best s": f"{timing.best:.3f}",
        "images/s": f"{batch / timing.median:.2f}",
        "/ bare fwd": f"{timing.median / bare:.2f}",
        "peer": "",
        "speed-up": "",
        "max|diff|": "",
        "max|diff| min-max": "",
    }


def run_cam(sizes: Sizes, device: torch.device) -> None:
    if not _have_grad_cam():
        print("pytorch-grad-cam is not installed (pip install grad-cam): comparison skipped")
    title = (
        f"CAM: resnet50 random weights, target layer4, {sizes.batch} images "
        f"{sizes.image_size}px, 3 classes each, {device}, {torch.get_num_threads()} threads, "
        f"{sizes.repeats} repeats"
    )
    print_table(title, bench_cam(sizes, device))


# --------------------------------------------------------------------------- main


def run_refine(sizes: Sizes, device: torch.device) -> None:
    """Seeds, growing and CRF on the CPU (they are numpy / pydensecrf; device unused)."""
    from bench_refine import print_refine_table

    print()
    print_refine_table(max(sizes.repeats, 3))


SECTIONS: dict[str, Callable[[Sizes, torch.device], None]] = {"cam": run_cam, "refine": run_refine}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement (median)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=sorted(SECTIONS),
        default=list(SECTIONS),
        help="which sections to run",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeats is not None:
        sizes = Sizes(sizes.batch, sizes.image_size, args.repeats)
    device = torch.device(args.device)
    for name in args.sections:
        SECTIONS[name](sizes, device)


if __name__ == "__main__":
    main()
