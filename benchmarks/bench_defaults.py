"""Mask quality and cost of the defaults on both development datasets (GUIDE §8).

For each dataset, digits (the demo) and scenes (textured shapes on photos), a
workspace made by ``wsss demo --dataset NAME --no-publish`` (made once, then
reused), then ``wsss compare`` of three configs over all its images:

- ``before``: the final masks as they were made until 2026-12: one background
  power (0.5), the grown regions anchoring the CRF's unary, no recovery, no
  affinity stage;
- ``no affinity``: the defaults until 2026-12-02: each image's background
  power chosen by where its outline meets image edges, vanished classes
  restored from the grown regions;
- ``defaults``: today's: the affinity stage on (its walk restores vanished
  classes first), self-training, and the candidates ranked by each class's
  outline (``crf.background_score``);
- ``all pairs``: today's with the affinity head trained on every pair offset
  per batch (``affinity.train_pair_share`` 1), the cost the sampling saves.

Printed per dataset and config: the final (crf) mIoU, object pixels kept,
given a wrong class, background turned object, images emptied, and the
seconds per image of the affinity and crf stages, with the crf's cost as a
ratio to ``before`` in the same run; then the seconds the affinity head
took to train and the classifier's training seconds, to set both beside the
per-image costs, and ``WS/compare/final_masks.png``: each config's final
masks on images whose objects cover a fifth of the frame or more. A second
run reuses every map (compare caches them).

Run from the repository root::

    .venv/bin/python benchmarks/bench_defaults.py --root /tmp/devsets
    .venv/bin/python benchmarks/bench_defaults.py --digits WS1 --scenes WS2   # existing ones
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from text_table import text_table

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_core.config import PipelineConfig
from wsss_core.data.images import load_label_map, load_rgb
from wsss_core.data.manifest import read_manifest
from wsss_core.report.figures import StagePanels, save_stage_overlays
from wsss_core.stages.compare import Comparison, compare_configs
from wsss_core.store.maps import iter_stage_cams, iter_stage_labels
from wsss_core.store.workspace import Workspace

FIGURE_IMAGES = 6

DATASETS = ("digits", "scenes")


def configs() -> dict[str, PipelineConfig]:
    defaults = PipelineConfig()
    without = defaults.model_copy(
        update={
            "affinity": defaults.affinity.model_copy(update={"enabled": False}),
            # ranked by one outline's edges, as until 2026-12-07
            "crf": defaults.crf.model_copy(update={"background_score": "edge"}),
        }
    )
    before = without.model_copy(
        update={
            "crf": defaults.crf.model_copy(
                update={"background_powers": (0.5,), "anchor_confidence": 0.9, "min_kept_share": 0}
            )
        }
    )
    all_pairs = defaults.model_copy(
        update={"affinity": defaults.affinity.model_copy(update={"train_pair_share": 1.0})}
    )
    return {"before": before, "no affinity": without, "defaults": defaults, "all pairs": all_pairs}


def ensure_workspace(path: Path, dataset: str) -> Workspace:
    """A trained workspace of ``dataset`` at ``path``: made by `wsss demo` when missing."""
    workspace = Workspace(path)
    if not workspace.model_path.exists():
        wsss = Path(sys.executable).with_name("wsss")
        command = [str(wsss), "demo", "--dataset", dataset, "--workspace", str(path)]
        subprocess.run([*command, "--no-publish"], check=True)
    return workspace


def training_seconds(workspace: Workspace) -> float:
    history = workspace.models_dir / "history.parquet"
    return float(sum(pq.read_table(history)["seconds"].to_pylist())) if history.exists() else 0.0


def object_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    """IoU of object (any class) against background, ignoring the truth's unknown pixels."""
    known = truth != 255
    predicted, true = (labels > 0) & (labels != 255) & known, (truth > 0) & known
    return float((predicted & true).sum() / max((predicted | true).sum(), 1))


def save_changed_masks(
    workspace: Workspace,
    comparison: Comparison,
    before: str,
    after: str,
    heat: tuple[str, str],
    shown: Sequence[str],
    file_name: str,
) -> Path:
    """The ``shown`` configs' final masks beside the ground truth where they changed most.

    The images whose object IoU moved most between configs ``before`` and
    ``after``; the heatmap is the max over classes of ``heat`` (config, stage)'s maps.
    """
    rows = {(row.config, row.stage): row for row in comparison.rows}
    finals = {
        name: {r.image_id: r.labels for r in iter_stage_labels(comparison.out_dir / row.maps)}
        for (name, stage), row in rows.items()
        if stage == "crf" and name in shown
    }
    heatmaps = {
        r.image_id: r.cams.max(axis=0, initial=0)
        for r in iter_stage_cams(comparison.out_dir / rows[heat].maps)
    }
    records = read_manifest(workspace).by_id()
    truths = {i: load_label_map(records[i].gt_uri) for i in finals[before] if records[i].gt_uri}
    change = {
        image_id: abs(
            object_iou(finals[after][image_id], truth) - object_iou(finals[before][image_id], truth)
        )
        for image_id, truth in truths.items()
    }
    picked = sorted(change, key=lambda image_id: (-change[image_id], image_id))[:FIGURE_IMAGES]
    panels = [
        StagePanels(
            image_id,
            load_rgb(records[image_id].uri),
            heatmaps[image_id],
            {"ground truth": truths[image_id], **{n: m[image_id] for n, m in finals.items()}},
        )
        for image_id in picked
    ]
    return save_stage_overlays(panels, comparison.out_dir / file_name)


def report(dataset: str, workspace: Workspace) -> list[dict[str, str]]:
    # bench_methods imports this module; its results() scores and times compared configs.
    from bench_methods import BASELINE, results

    out_dir = workspace.root / "compare"
    comparison = compare_configs(workspace, configs(), out_dir, log=print)
    rows = {(row.config, row.stage): row for row in comparison.rows}
    measured = {r.recipe: r for r in results(dataset, workspace, configs(), None)}
    base_crf = rows["before", "crf"].seconds_per_image
    base_run = measured["no affinity"].run_seconds
    table = []
    for name in configs():
        crf, result = rows[name, "crf"], measured[name]
        affinity = rows.get((name, "affinity"))
        table.append(
            {
                "dataset": dataset,
                "config": name,
                "images": str(crf.images),
                "crf mIoU": f"{crf.miou:.4f}",
                f"vs {BASELINE} [90%]": f"{result.gain_low:+.3f} .. {result.gain_high:+.3f}",
                "kept": f"{crf.fg_recall:.3f}",
                "wrong class": f"{crf.fg_wrong_class:.3f}",
                "bg->object": f"{crf.bg_to_fg:.3f}",
                "emptied": f"{crf.emptied:.3f}",
                "head s": f"{result.head_seconds:.0f}" if affinity else "-",
                "affinity s/img": f"{affinity.seconds_per_image:.3f}" if affinity else "-",
                "crf s/img": f"{crf.seconds_per_image:.3f}",
                "crf cost vs before": f"{crf.seconds_per_image / base_crf:.2f}x",
                "run s": f"{result.run_seconds:.0f}",
                "run vs no affinity": f"{result.run_seconds / base_run:.2f}x",
            }
        )
    figure = save_changed_masks(
        workspace,
        comparison,
        "no affinity",
        "defaults",
        ("defaults", "affinity"),
        list(configs()),
        "final_masks.png",
    )
    print(
        f"{dataset}: classifier training {training_seconds(workspace):.0f} s; final masks where "
        f"the affinity stage changed them most (the heatmap: walked CAMs): "
        f"{figure}"
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("devsets"), help="workspaces made here")
    for dataset in DATASETS:
        parser.add_argument(f"--{dataset}", type=Path, help=f"an existing {dataset} workspace")
    args = parser.parse_args()
    table = []
    for dataset in DATASETS:
        path = getattr(args, dataset) or args.root / dataset
        table += report(dataset, ensure_workspace(path, dataset))
    print()
    print(text_table(table))


if __name__ == "__main__":
    main()
