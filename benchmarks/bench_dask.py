"""CRF stage throughput of the label flow with 1 and 2 Dask worker processes (and threads).

Goal: on a 2-core machine, CRF over 200 images with 2 Dask workers at least
1.7x faster than with 1 (pydensecrf holds the GIL, so only processes scale it).

A demo workspace (200 canvases of 384x384, about 0.3 s of CRF each, as a
500x375 VOC image; shards of 10) is prepared in-process once: ingest, a tiny
classifier (the masks' quality does not matter here), then the cam, seeds and
grown stages. Each measured run deletes ``maps/crf`` and runs the Prefect ``label``
flow, so only the CRF stage recomputes; its time is the flow's own
``stage_seconds["crf"]``, which leaves out the Dask cluster's start-up (the
run's whole wall time, start-up included, is printed next to it). The CRF
maps of every run are checked to be identical to those of the first Dask run.

Prefect runs against one temporary server and a temporary ``PREFECT_HOME``,
both removed at the end.

Run from the repository root::

    .venv/bin/python benchmarks/bench_dask.py              # 200 images (a few minutes)
    .venv/bin/python benchmarks/bench_dask.py --quick      # 40 images
    .venv/bin/python benchmarks/bench_dask.py --workspace /tmp/ws --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from prefect_env import quiet_orchestration
from text_table import text_table

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_core.config import PipelineConfig, load_config
from wsss_core.model.reuse import train_or_reuse
from wsss_core.stages.cam_stage import run_cam_shard
from wsss_core.stages.common import current_model_hash, shard_count
from wsss_core.stages.grow_stage import run_grow_shard
from wsss_core.stages.ingest_stage import ingest
from wsss_core.stages.seeds_stage import run_seeds_shard
from wsss_core.store.maps import read_label_shard
from wsss_core.store.workspace import MAP_STAGES, Workspace

UPSTREAM_STAGES = (run_cam_shard, run_seeds_shard, run_grow_shard)
# The smallest classifier that trains in seconds: CRF cost does not depend on it.
TRAIN = {"backbone": "resnet18", "weights": None, "image_size": 64, "epochs": 1, "batch_size": 16}


@dataclass(frozen=True)
class Runner:
    kind: str  # "threads" (Prefect's default) or "dask" (a LocalCluster)
    workers: int | None  # None: the runner's default

    @property
    def name(self) -> str:
        return self.kind if self.workers is None else f"{self.kind}-{self.workers}"


@dataclass(frozen=True)
class Run:
    runner: Runner
    crf_seconds: float  # the flow's CRF stage, cluster start-up excluded
    wall_seconds: float  # the whole flow run, start-up included
    digest: str  # of every CRF label map and confidence, for the identity check


def write_config(path: Path, images: int, image_size: int, shard_size: int) -> Path:
    config = {
        "device": "cpu",
        "shard_size": shard_size,
        "demo": {"num_images": images, "image_size": image_size, "seed": 0},
        "train": TRAIN,
        "cam": {"scales": [1.0], "batch_size": 16},
        # Off, as when the README's figures were measured: this times the CRF stage's
        # scaling, and the walk would add a head's training to the first run.
        "affinity": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(config))
    PipelineConfig.from_yaml(path)  # fail here, not inside the first flow run
    return path


def prepare(workspace: Workspace, config_file: Path) -> int:
    """Ingest, train and compute cam/seeds/grown (each skipped when up to date); shard count."""
    config = load_config(config_file)
    ingest("demo", workspace.root / "demo-source", workspace, demo=config.demo)
    train_or_reuse(workspace, config, log=lambda _: None, show_progress=False)
    model = current_model_hash(workspace)
    shards = shard_count(workspace, config)
    for run_stage in UPSTREAM_STAGES:
        for shard in range(shards):
            run_stage(workspace, config, shard, model_hash=model)
    return shards


def crf_digest(workspace: Workspace) -> str:
    """One hash over every CRF map (labels and confidence), in shard and row order."""
    digest = hashlib.sha256()
    for path in sorted(workspace.maps_dir("crf").glob("part-*.parquet")):
        for record in read_label_shard(path):
            digest.update(record.image_id.encode())
            digest.update(record.labels.tobytes())
            if record.confidence is not None:
                digest.update(record.confidence.tobytes())
    return digest.hexdigest()


def run_crf(runner: Runner, workspace: Workspace, config_file: Path, shards: int) -> Run:
    """One label-flow run in which only the CRF stage has work to do."""
    # Imported late: Prefect reads its settings on import (see quiet_orchestration).
    from flows.label import label_with_runner
    from flows.runners import RunnerOptions

    options = None
    if runner.kind == "dask":
        options = RunnerOptions(kind="dask", workers=runner.workers)
    # Deleting the maps (not a changed setting) keeps every run's work and output identical.
    shutil.rmtree(workspace.maps_dir("crf"), ignore_errors=True)
    started = time.perf_counter()
    state = label_with_runner(options)(
        workspace=str(workspace.root), config_file=str(config_file), return_state=True
    )
    wall = time.perf_counter() - started
    result = state.result(raise_on_failure=False)
    if not state.is_completed():
        raise RuntimeError(f"{runner.name}: label flow ended {state.type.value}: {state.message}")
    expected = {stage: shards if stage == "crf" else 0 for stage in MAP_STAGES}
    if result.computed_shards != expected:
        raise RuntimeError(f"{runner.name}: recomputed {result.computed_shards}, not {expected}")
    return Run(runner, result.stage_seconds["crf"], wall, crf_digest(workspace))


def measure(
    runners: Sequence[Runner], workspace: Workspace, config_file: Path, shards: int, repeats: int
) -> dict[Runner, list[Run]]:
    """Every runner ``repeats`` times, interleaved so drifting load hits them alike."""
    from flows.runners import prefect_api_for_workers

    runs: dict[Runner, list[Run]] = {runner: [] for runner in runners}
    # One API server for every run: Dask worker processes need it, and it starts slowly.
    with prefect_api_for_workers():
        for repeat in range(repeats):
            for runner in runners:
                run = run_crf(runner, workspace, config_file, shards)
                runs[runner].append(run)
                print(
                    f"  repeat {repeat + 1}/{repeats} {runner.name:>9}: crf "
                    f"{run.crf_seconds:.1f} s, run {run.wall_seconds:.1f} s",
                    flush=True,
                )
    return runs


def report(runs: dict[Runner, list[Run]], images: int, baseline: Runner) -> None:
    best = {runner: min(rs, key=lambda r: r.crf_seconds) for runner, rs in runs.items()}
    base_seconds = best[baseline].crf_seconds
    rows = [
        {
            "runner": runner.kind,
            "workers": str(runner.workers or "default"),
            "crf seconds": f"{run.crf_seconds:.1f}",
            "images/s": f"{images / run.crf_seconds:.2f}",
            f"speed-up vs {baseline.name}": f"{base_seconds / run.crf_seconds:.2f}x",
            "run seconds (with start-up)": f"{run.wall_seconds:.1f}",
        }
        for runner, run in best.items()
    ]
    print(text_table(rows))
    reference = runs[baseline][0].digest
    for runner, rs in runs.items():
        same = all(r.digest == reference for r in rs)
        verdict = "identical" if same else "DIFFERENT"
        print(f"crf maps of {runner.name} ({len(rs)} run(s)) vs {baseline.name}: {verdict}")
    dask = [r for r in runs if r.kind == "dask" and r.workers]
    if len(dask) > 1:
        low, high = min(dask, key=lambda r: r.workers), max(dask, key=lambda r: r.workers)
        ratio = best[low].crf_seconds / best[high].crf_seconds
        print(f"{high.workers} workers vs {low.workers}: {ratio:.2f}x (target >= 1.7x)")


def _worker_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of worker counts >= 1")
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 images instead of 200")
    parser.add_argument("--images", type=int, help="demo images (default 200, --quick 40)")
    parser.add_argument("--image-size", type=int, default=384, help="demo canvas side, pixels")
    parser.add_argument("--shard-size", type=int, default=10, help="images per shard")
    parser.add_argument("--workers-list", type=_worker_counts, default=[1, 2], help="e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=1, help="runs per runner (best kept)")
    parser.add_argument("--no-threads", action="store_true", help="skip the threads reference")
    parser.add_argument("--workspace", type=Path, help="prepare here and keep it (reused)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    images = args.images or (40 if args.quick else 200)

    scratch = Path(tempfile.mkdtemp(prefix="wsss-bench-dask-"))
    try:
        quiet_orchestration(scratch / "prefect-home")
        workspace = Workspace(args.workspace or scratch / "workspace")
        workspace.root.mkdir(parents=True, exist_ok=True)
        config_file = write_config(
            workspace.root / "bench-config.yaml", images, args.image_size, args.shard_size
        )
        started = time.perf_counter()
        shards = prepare(workspace, config_file)
        print(
            f"{images} images of {args.image_size}x{args.image_size}, {shards} shards of "
            f"{args.shard_size}; workspace ready in {time.perf_counter() - started:.0f} s; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        dask = [Runner("dask", workers) for workers in sorted(set(args.workers_list))]
        runners = dask if args.no_threads else [Runner("threads", None), *dask]
        runs = measure(runners, workspace, config_file, shards, args.repeats)
        print(f"\n== crf stage, best of {args.repeats} (load average {os.getloadavg()[0]:.2f})")
        report(runs, images, dask[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
