"""Ingest and workspace-store figures: throughput, bytes on disk, streaming memory.

Run from the repository root::

    .venv/bin/python benchmarks/bench_store.py            # full sizes (a few minutes)
    .venv/bin/python benchmarks/bench_store.py --quick    # small sizes, seconds

Sections:

* ``ingest``: images/s of ``stages.ingest_stage.ingest`` on a folder of 2,000
  500x375 JPEGs (first ingest: hash + full decode; re-ingest of the unchanged
  folder: hash + header only), with 1 and 2 worker threads;
* ``bytes``: bytes on disk per image of CAM maps for 500x375 images with 3
  classes present, at stride 1, 2 and 4, next to a float32 ``.npy`` per image
  (what IRN-style pipelines keep) and the mean / max error a stride costs;
* ``read``: images/s and decoded MB/s reading one stage's CAM shards back
  (full-resolution float32 out), and a label stage's maps;
* ``memory``: peak RSS of a fresh process streaming every map of a stage,
  for 2,000 and for 20,000 images (shards are hard links of one written
  shard, so the disk holds one). Flat means the ratio stays under 1.3.

All data is synthetic and generated in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from text_table import text_table

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_core.data.sources import IngestOptions
from wsss_core.stages.ingest_stage import ingest
from wsss_core.store.maps import (
    CamRecord,
    LabelRecord,
    Lineage,
    iter_stage_cams,
    read_cam_shard,
    read_label_shard,
    write_cam_shard,
    write_label_shard,
)
from wsss_core.store.workspace import Workspace

HEIGHT, WIDTH, CLASSES = 375, 500, 3
LINEAGE = Lineage("c" * 16, "m" * 16, "s" * 16)


@dataclass(frozen=True)
class Sizes:
    ingest_images: int
    shard_images: int
    stream_small: int
    stream_large: int


FULL = Sizes(ingest_images=2000, shard_images=256, stream_small=2000, stream_large=20000)
QUICK = Sizes(ingest_images=200, shard_images=32, stream_small=200, stream_large=2000)


def synthetic_cams(rng: np.random.Generator) -> np.ndarray:
    """[3, 375, 500] float32: a few Gaussian blobs per class, each map max-normalised."""
    yy = np.arange(HEIGHT, dtype=np.float32)[:, None]
    xx = np.arange(WIDTH, dtype=np.float32)[None, :]
    maps = np.zeros((CLASSES, HEIGHT, WIDTH), np.float32)
    for k in range(CLASSES):
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
            sy, sx = rng.uniform(25, 90, size=2)
            maps[k] += np.exp(-((yy - cy) ** 2) / (2 * sy**2)) * np.exp(
                -((xx - cx) ** 2) / (2 * sx**2)
            )
        maps[k] /= maps[k].max()
    return maps


def bench_ingest(sizes: Sizes, scratch: Path) -> list[dict[str, str]]:
    rng = np.random.default_rng(0)
    root = scratch / "folder"
    (root / "images").mkdir(parents=True)
    base = (np.indices((HEIGHT, WIDTH)).sum(axis=0) % 256).astype(np.uint8)
    rows = ["image_id,labels"]
    for index in range(sizes.ingest_images):
        image = np.stack([base, base[::-1], base[:, ::-1]], axis=-1).copy()
        top, left = rng.integers(0, HEIGHT - 100), rng.integers(0, WIDTH - 100)
        image[top : top + 100, left : left + 100] = rng.integers(0, 255, 3, dtype=np.uint8)
        image = (image + rng.integers(0, 12, image.shape, dtype=np.uint8)).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"img{index:05d}.jpg", quality=90)
        rows.append(f"img{index:05d},{'cat;dog' if index % 2 else 'dog'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    megabytes = sum(p.stat().st_size for p in (root / "images").iterdir()) / 1e6

    results = []
    for workers in (1, 2):
        workspace = Workspace(scratch / f"ws-{workers}")
        for run in ("first ingest", "re-ingest, unchanged"):
            started = time.perf_counter()
            summary = ingest("folder", root, workspace, IngestOptions(workers=workers))
            seconds = time.perf_counter() - started
            assert summary.ingested == sizes.ingest_images
            results.append(
                {
                    "run": run,
                    "workers": str(workers),
                    "images": str(sizes.ingest_images),
                    "seconds": f"{seconds:.2f}",
                    "images/s": f"{sizes.ingest_images / seconds:.0f}",
                    "MB/s": f"{megabytes / seconds:.1f}",
                }
            )
    return results


def _cam_shard(directory: Path, count: int, stride: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    records = [CamRecord(f"img{i:05d}", (0, 4, 7), synthetic_cams(rng)) for i in range(count)]
    path = directory / "part-00000.parquet"
    write_cam_shard(path, records, LINEAGE, stride=stride)
    return path


def bench_bytes(sizes: Sizes, scratch: Path) -> list[dict[str, str]]:
    count = min(sizes.shard_images, 64)
    rng = np.random.default_rng(1)
    originals = [synthetic_cams(rng) for _ in range(count)]
    results = [
        {
            "format": "float32 .npy per image (IRN-style)",
            "bytes/image": f"{CLASSES * HEIGHT * WIDTH * 4 + 128:,}",
            "vs npy": "1.00",
            "mean err": "0",
            "max err": "0",
        }
    ]
    npy = CLASSES * HEIGHT * WIDTH * 4 + 128
    for stride in (1, 2, 4):
        path = scratch / f"bytes-{stride}" / "part-00000.parquet"
        records = [CamRecord(f"i{i}", (0, 1, 2), c) for i, c in enumerate(originals)]
        write_cam_shard(path, records, LINEAGE, stride=stride)
        per_image = path.stat().st_size / count
        errors = [np.abs(r.cams - o) for r, o in zip(read_cam_shard(path), originals, strict=True)]
        results.append(
            {
                "format": f"maps/cam Parquet, float16 + zstd, stride {stride}",
                "bytes/image": f"{per_image:,.0f}",
                "vs npy": f"{per_image / npy:.3f}",
                "mean err": f"{np.mean([e.mean() for e in errors]):.4f}",
                "max err": f"{max(e.max() for e in errors):.4f}",
            }
        )
    return results


def bench_read(sizes: Sizes, scratch: Path) -> list[dict[str, str]]:
    results = []
    count = sizes.shard_images
    for stride in (1, 4):
        path = _cam_shard(scratch / f"read-cam-{stride}", count, stride)
        started = time.perf_counter()
        decoded = sum(r.cams.nbytes for r in read_cam_shard(path))
        seconds = time.perf_counter() - started
        results.append(
            {
                "table": f"cam, stride {stride}",
                "images": str(count),
                "images/s": f"{count / seconds:.0f}",
                "decoded MB/s": f"{decoded / 1e6 / seconds:.0f}",
                "file MB": f"{path.stat().st_size / 1e6:.1f}",
            }
        )
    rng = np.random.default_rng(2)
    labels = [
        LabelRecord(f"i{i}", rng.integers(0, 4, (HEIGHT, WIDTH), dtype=np.uint8).repeat(1, 0))
        for i in range(count)
    ]
    path = scratch / "read-labels" / "part-00000.parquet"
    write_label_shard(path, "grown", labels, LINEAGE)
    started = time.perf_counter()
    decoded = sum(r.labels.nbytes for r in read_label_shard(path))
    seconds = time.perf_counter() - started
    results.append(
        {
            "table": "grown labels (noise: worst case)",
            "images": str(count),
            "images/s": f"{count / seconds:.0f}",
            "decoded MB/s": f"{decoded / 1e6 / seconds:.0f}",
            "file MB": f"{path.stat().st_size / 1e6:.1f}",
        }
    )
    return results


def _stream_child(directory: str) -> None:
    """In a fresh process: stream every CAM of ``directory``; print images and peak RSS."""
    images = 0
    checksum = 0.0
    for record in iter_stage_cams(Path(directory)):
        images += 1
        checksum += float(record.cams[:, ::50, ::50].sum())
    print(images, _peak_rss_kib(), checksum)


def _peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: on Linux that keeps the
    parent's high-water mark across fork + exec, which would hide the child's own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def bench_memory(sizes: Sizes, scratch: Path) -> list[dict[str, str]]:
    stride = 4
    template = _cam_shard(scratch / "memory-template", sizes.shard_images, stride)
    results, peaks = [], {}
    for total in (sizes.stream_small, sizes.stream_large):
        directory = scratch / f"memory-{total}" / "maps" / "cam"
        directory.mkdir(parents=True)
        shards = -(-total // sizes.shard_images)
        for index in range(shards):
            os.link(template, directory / f"part-{index:05d}.parquet")
        started = time.perf_counter()
        output = subprocess.run(
            [sys.executable, __file__, "--stream-child", str(directory)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        ).stdout.split()
        seconds = time.perf_counter() - started
        images, peak = int(output[0]), int(output[1]) / 1024
        peaks[total] = peak
        results.append(
            {
                "images streamed": f"{images:,}",
                "shards": str(shards),
                "seconds": f"{seconds:.1f}",
                "peak RSS MiB": f"{peak:.0f}",
            }
        )
    ratio = peaks[sizes.stream_large] / peaks[sizes.stream_small]
    results.append(
        {
            "images streamed": "ratio large/small",
            "shards": "",
            "seconds": "",
            "peak RSS MiB": f"{ratio:.3f} ({'flat' if ratio < 1.3 else 'NOT flat'})",
        }
    )
    return results


SECTIONS = {
    "ingest": bench_ingest,
    "bytes": bench_bytes,
    "read": bench_read,
    "memory": bench_memory,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="a section")
    parser.add_argument("--stream-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stream_child:
        _stream_child(args.stream_child)
        return
    sizes = QUICK if args.quick else FULL
    scratch = Path(tempfile.mkdtemp(prefix="wsss-bench-store-"))
    try:
        for name in args.only or SECTIONS:
            started = time.perf_counter()
            rows = SECTIONS[name](sizes, scratch / name)
            print(f"\n== {name} ({time.perf_counter() - started:.0f} s)")
            print(text_table(rows), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
