"""Publishing to FiftyOne: seconds for 1,000 samples, first publish and update in place.

Run from the repository root::

    .venv/bin/python benchmarks/bench_publish.py                 # 1,000 samples, 64 px
    .venv/bin/python benchmarks/bench_publish.py --count 200 --size 375x500

A synthetic workspace is written with the store API (manifest, CAM / seeds /
grown / crf shards, final masks; no training), then published into a FiftyOne
database in a temporary folder (FiftyOne starts its own mongod there), then
published again, which updates every sample in place. Printed per pass:
seconds, samples/s, and how much of it went to the review files (the PNGs
behind ``cam_heatmap`` / ``seeds_mask`` / ``grown_mask`` and the scores).
The goal is seconds, not minutes, for 1,000 samples.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_core.config import ReviewConfig
from wsss_core.data.images import save_label_map, voc_palette
from wsss_core.data.manifest import ImageRecord, write_manifest
from wsss_core.store.maps import (
    CamRecord,
    LabelRecord,
    Lineage,
    write_cam_shard,
    write_label_shard,
)
from wsss_core.store.workspace import Workspace

CLASSES = ("cat", "dog", "person", "car", "bird")
LINEAGE = Lineage(config_hash="bench", model_hash="bench", source_hash="bench")


def synthetic_workspace(
    root: Path, count: int, height: int, width: int, shard_size: int, seed: int = 0
) -> Workspace:
    """Images, manifest, map shards and masks for ``count`` images; every 50th a duplicate."""
    rng = np.random.default_rng(seed)
    workspace = Workspace(root / "ws")
    images = root / "images"
    images.mkdir(parents=True)
    palette = voc_palette()
    records = []
    for i in range(count):
        path = images / f"img{i:05d}.png"
        if i % 50 == 49:  # an exact copy of the previous image
            shutil.copyfile(images / f"img{i - 1:05d}.png", path)
        else:
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
        labels = tuple(sorted(rng.choice(len(CLASSES), rng.integers(1, 3), replace=False)))
        records.append(
            ImageRecord(
                image_id=path.stem,
                uri=str(path),
                width=width,
                height=height,
                labels=tuple(int(c) for c in labels),
                split="train" if i % 5 else "val",
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            )
        )
    write_manifest(workspace, records, CLASSES, {"kind": "bench"})

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for shard, start in enumerate(range(0, count, shard_size)):
        cams, seeds, grown, crf = [], [], [], []
        for record in records[start : start + shard_size]:
            maps = []
            for _ in record.labels:
                cy, cx = rng.uniform(0, height), rng.uniform(0, width)
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (height / 4) ** 2))
                maps.append(blob / blob.max())
            scores = rng.uniform(0.0, 0.05, len(CLASSES))
            scores[list(record.labels)] = rng.uniform(0.05, 1.0, len(record.labels))
            scores[rng.integers(len(CLASSES))] = rng.uniform(0.5, 1.0)  # some missing labels
            cam = np.stack(maps).astype(np.float32)
            cams.append(CamRecord(record.image_id, record.labels, cam, tuple(scores)))
            peak = cam.max(axis=0)
            label = np.where(peak > 0.5, record.labels[0] + 1, 0).astype(np.uint8)
            seeds.append(LabelRecord(record.image_id, np.where(peak > 0.9, label, 255)))
            grown.append(LabelRecord(record.image_id, np.where(peak > 0.6, label, 255)))
            confidence = (0.5 + 0.5 * np.abs(peak - 0.5) * 2).astype(np.float32)
            crf.append(LabelRecord(record.image_id, label, confidence))
            save_label_map(workspace.mask_path(record.image_id), label, palette)
        write_cam_shard(workspace.shard_path("cam", shard), cams, LINEAGE, stride=4)
        write_label_shard(workspace.shard_path("seeds", shard), "seeds", seeds, LINEAGE)
        write_label_shard(workspace.shard_path("grown", shard), "grown", grown, LINEAGE)
        write_label_shard(workspace.shard_path("crf", shard), "crf", crf, LINEAGE)
    return workspace


def _timed_publish(workspace: Workspace, config: ReviewConfig, shard_size: int):
    """(seconds, summary, seconds spent in the review files) of one publish."""
    from wsss_core.review import fiftyone_adapter

    spent = [0.0]
    original = fiftyone_adapter.write_review_files

    def timed(*args, **kwargs):
        started = time.perf_counter()
        files = list(original(*args, **kwargs))
        spent[0] += time.perf_counter() - started
        return files

    fiftyone_adapter.write_review_files = timed
    try:
        started = time.perf_counter()
        summary = fiftyone_adapter.publish(workspace, config, shard_size=shard_size)
        return time.perf_counter() - started, summary, spent[0]
    finally:
        fiftyone_adapter.write_review_files = original


def _stop_database() -> None:
    """Stop the mongod FiftyOne started, so its folder can be removed (private API)."""
    import fiftyone.core.odm.database as fod

    fod._disconnect()
    service = fod._db_service
    child = getattr(service, "child", None)
    if child is not None:
        service.stop()  # closes the service's stdin: it terminates mongod and exits
        child.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="samples (default 1000)")
    parser.add_argument("--size", default="64x64", help="image HxW (default 64x64)")
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))

    scratch = Path(tempfile.mkdtemp(prefix="wsss-bench-publish-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    os.environ["FIFTYONE_DATABASE_DIR"] = str(scratch / "fiftyone-db")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    started = time.perf_counter()
    workspace = synthetic_workspace(scratch, args.count, height, width, args.shard_size)
    print(
        f"synthetic workspace: {args.count} images of {height}x{width}, "
        f"{time.perf_counter() - started:.1f} s to write"
    )
    config = ReviewConfig(
        database_dir=str(scratch / "fiftyone-db"), dataset_name="wsss-bench-publish"
    )
    from wsss_core.review.fiftyone_adapter import configure_database

    started = time.perf_counter()
    configure_database(workspace, config)
    import fiftyone as fo  # importing and starting the database are not publishing

    fo.list_datasets()
    print(f"FiftyOne import + database start: {time.perf_counter() - started:.1f} s")

    print(f"{'pass':<22} {'seconds':>8} {'samples/s':>10} {'review files s':>15}")
    for name in ("publish (add)", "re-publish (update)"):
        seconds, summary, files = _timed_publish(workspace, config, args.shard_size)
        assert summary.added + summary.updated == args.count, summary
        print(f"{name:<22} {seconds:8.2f} {args.count / seconds:10.0f} {files:15.2f}")
    dataset = fo.load_dataset("wsss-bench-publish")
    flagged = len(dataset.load_saved_view("label-suspects"))
    print(f"flagged samples (label-suspects view): {flagged} of {len(dataset)}")
    dataset.delete()
    _stop_database()
    return 0


if __name__ == "__main__":
    sys.exit(main())
