"""Self-training's final masks and cost against the defaults on both development datasets.

For each dataset, digits (the demo) and scenes, a workspace made by ``wsss
demo --dataset NAME --no-publish`` (made once, then reused) is compared over
all its images by ``wsss compare`` with:

- ``defaults``: today's defaults (self-training off);
- ``self-training``: ``configs/methods/self_training.yaml`` (head weight 0.5);
- ``head weight W`` for W in 0.4-0.7 other than the default's: the same
  head, mixed less or more (to show how sharp the choice is).

Printed per dataset and config: final (crf) mIoU, its gain over the defaults
with a 90% paired bootstrap interval over the images, object pixels kept,
images emptied, the self-training head's training seconds (its first passes,
features and epochs), the crf stage's seconds per image, and the whole run's
time (training + every stage's seconds per image x images) as a ratio to the
defaults' in the same run. Then ``WS/compare/self_training.png``: the images
whose final masks it changed most, beside their ground truth. A second run
reuses every map and head (compare caches them).

Run from the repository root::

    .venv/bin/python benchmarks/bench_self_training.py --root devsets
    .venv/bin/python benchmarks/bench_self_training.py --digits WS1 --scenes WS2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench_defaults import DATASETS, ensure_workspace, save_changed_masks
from bench_methods import BASELINE, RECIPES_DIR, results
from text_table import text_table

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_core.config import PipelineConfig, load_config
from wsss_core.stages.compare import compare_configs
from wsss_core.store.workspace import Workspace

RECIPE = "self-training"
NEIGHBOUR_WEIGHTS = (0.4, 0.5, 0.6, 0.7)  # head_weight values beside the default's


def configs() -> dict[str, PipelineConfig]:
    recipe = load_config(RECIPES_DIR / "self_training.yaml")

    def weighted(weight: float) -> PipelineConfig:
        section = recipe.self_training.model_copy(update={"head_weight": weight})
        return recipe.model_copy(update={"self_training": section})

    chosen = recipe.self_training.head_weight
    others = {f"head weight {w}": weighted(w) for w in NEIGHBOUR_WEIGHTS if w != chosen}
    return {BASELINE: PipelineConfig(), RECIPE: recipe, **others}


def report(dataset: str, workspace: Workspace) -> list[dict[str, str]]:
    measured = results(dataset, workspace, configs(), None)
    base = next(r for r in measured if r.recipe == BASELINE)
    table = [
        {
            "dataset": dataset,
            "config": r.recipe,
            "images": str(r.images),
            "final mIoU": f"{r.miou:.4f}",
            "vs defaults": f"{r.miou - base.miou:+.3f}",
            "90% interval": f"[{r.gain_low:+.3f}, {r.gain_high:+.3f}]",
            "kept": f"{r.fg_recall:.3f}",
            "emptied": f"{100 * r.emptied:.1f}%",
            "head s": f"{r.head_seconds - base.head_seconds:.0f}" if r.recipe != BASELINE else "-",
            "crf s/img": f"{r.stage_seconds['crf']:.3f}",
            "run s": f"{r.run_seconds:.0f}",
            "run vs defaults": f"{r.run_seconds / base.run_seconds:.2f}x",
        }
        for r in measured
    ]
    comparison = compare_configs(workspace, configs(), workspace.root / "compare")  # cached
    shown = (BASELINE, RECIPE)
    figure = save_changed_masks(
        workspace, comparison, *shown, (BASELINE, "cam"), shown, "self_training.png"
    )
    print(f"{dataset}: masks it changed most: {figure}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("devsets"), help="workspaces made here")
    for dataset in DATASETS:
        parser.add_argument(f"--{dataset}", type=Path, help=f"an existing {dataset} workspace")
    parser.add_argument("--only", choices=DATASETS, help="one dataset only")
    args = parser.parse_args()
    table = []
    for dataset in [args.only] if args.only else DATASETS:
        path = getattr(args, dataset) or args.root / dataset
        table += report(dataset, ensure_workspace(path, dataset))
    print()
    print(text_table(table))


if __name__ == "__main__":
    main()
