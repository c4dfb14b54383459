"""Self-training, a default since 2026-12-03: its masks, thresholds and cost on both datasets.

For each dataset, digits (the demo) and scenes, a workspace made by ``wsss
demo --dataset NAME --no-publish`` (made once, then reused) is compared over
all its images by ``wsss compare`` with:

- ``defaults``: today's (the affinity walk and self-training on);
- ``no self-training``: the defaults until 2026-12-03;
- ``issue 11``: the defaults before the remedies (no affinity stage, no
  self-training, background candidates ranked by ``edge``, the CAM scales of
  then), the baseline of issue 12's goal (+0.05 at no more than 2x the run's
  time);
- ``cam scales 1, 0.5, 1.5``: the CAM scales until 2026-12-08;
- ``head on 1 thread``: the head trained on one CPU thread, as until
  2026-12-06 (``self_training.training_threads``, now 2);
- the cheaper heads: ``4 epochs`` (half the default training) and ``head
  on 200 images`` (half the images, so half the first passes and epochs);
- ``no affinity stage``: self-training alone, without the walk's head and
  pass;
- ``head weight W``: the head mixed less or more than the default 0.6;
- ``head's last step``: the head's last weights, as until 2026-12-08, not
  their mean over its last 4 epochs (``self_training.average_epochs``);
- ``test scales 0.75, 1`` (the head read at 0.75 x and 1 x its input size,
  averaged), ``weight decay 1e-2`` (the head's, against 1e-4), ``both``, and
  ``both, head on 600 images``;
- the thresholds re-chosen with self-training on: ``crf.min_kept_share``
  and the CRF's appearance kernel weight ``crf.bilateral_compat`` on either
  side of the defaults (both passes use them, so each retrains the head).

Printed per dataset and config: final (crf) mIoU, its gain over the defaults
with a 90% paired bootstrap interval over the images, the gain over issue 11's
defaults, object pixels kept, images emptied, the heads' training seconds
(affinity and self-training: their first passes, features and epochs), the crf
stage's seconds per image, and the whole run's time (training + every stage's
seconds per image x images) as a ratio to issue 11's in the same run. Then
``WS/compare/self_training.png``: the images whose final masks self-training
changed most, beside their ground truth (not with ``--timing``). A second run
reuses every map and head (compare caches them), and with them the timings
measured when they were made: a figure from a run that shared its cores stays
in the cache. ``--timing`` therefore compares only the configs the time goal
needs (defaults, issue 11, the head on 1 thread, the cheaper heads, no
affinity stage) in a compare folder of its own, ``WS/compare/run-time``, so
every timing in its table is measured on the same cores (the classifier's
training seconds, the same for all, come from the workspace's history). Give
it free cores.

Run from the repository root (``--only`` one dataset, e.g. one per core)::

    .venv/bin/python benchmarks/bench_self_training.py --root devsets
    .venv/bin/python benchmarks/bench_self_training.py --digits WS1 --scenes WS2
    .venv/bin/python benchmarks/bench_self_training.py --root devsets --timing
    .venv/bin/python benchmarks/bench_self_training.py --timing --configs defaults "issue 11"

``--configs`` compares only those (the defaults and issue 11 always), e.g. to
time a change of the code against issue 11 in a few minutes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench_defaults import DATASETS, ensure_workspace, save_changed_masks
from bench_methods import BASELINE, results
from text_table import text_table

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_core.config import PipelineConfig
from wsss_core.stages.compare import compare_configs
from wsss_core.store.workspace import Workspace

WITHOUT = "no self-training"
ISSUE_11 = "issue 11"
ONE_THREAD = "head on 1 thread"
FOUR_EPOCHS = "4 epochs"
HALF_IMAGES = "head on 200 images"
NO_AFFINITY = "no affinity stage"
LAST_STEP = "head's last step"
EARLIER_CAM_SCALES = (1.0, 0.5, 1.5)  # cam.scales until 2026-12-08
TIMING_CONFIGS = (BASELINE, ISSUE_11, ONE_THREAD, FOUR_EPOCHS, HALF_IMAGES, NO_AFFINITY)
TIMING_FOLDER = "run-time"
NEIGHBOUR_WEIGHTS = (0.4, 0.5, 0.7)  # head_weight beside the default 0.6
NEIGHBOUR_KEPT_SHARES = (0.05, 0.2)  # crf.min_kept_share beside the default 0.1
NEIGHBOUR_BILATERAL_COMPATS = (5.0, 15.0)  # crf.bilateral_compat beside the default 10
TEST_SCALES = (0.75, 1.0)  # self_training.test_scales beside the default (1,)
WEIGHT_DECAY = 1e-2  # self_training.weight_decay beside the default 1e-4


def _with(config: PipelineConfig, section: str, **update: object) -> PipelineConfig:
    changed = getattr(config, section).model_copy(update=update)
    return config.model_copy(update={section: changed})


def configs() -> dict[str, PipelineConfig]:
    defaults = PipelineConfig()
    without = _with(defaults, "self_training", enabled=False)
    earlier_scales = _with(defaults, "cam", scales=EARLIER_CAM_SCALES)
    # Issue 11's defaults also ranked the background candidates by one outline's edges.
    issue_11 = _with(_with(without, "affinity", enabled=False), "crf", background_score="edge")
    return {
        BASELINE: defaults,
        WITHOUT: without,
        ISSUE_11: _with(issue_11, "cam", scales=EARLIER_CAM_SCALES),
        "cam scales 1, 0.5, 1.5": earlier_scales,
        ONE_THREAD: _with(defaults, "self_training", training_threads=1),
        FOUR_EPOCHS: _with(defaults, "self_training", epochs=4),
        HALF_IMAGES: _with(defaults, "self_training", train_images=200),
        NO_AFFINITY: _with(defaults, "affinity", enabled=False),
        LAST_STEP: _with(defaults, "self_training", average_epochs=0),
        "test scales 0.75, 1": _with(defaults, "self_training", test_scales=TEST_SCALES),
        "weight decay 1e-2": _with(defaults, "self_training", weight_decay=WEIGHT_DECAY),
        "both": _with(
            defaults, "self_training", test_scales=TEST_SCALES, weight_decay=WEIGHT_DECAY
        ),
        "both, head on 600 images": _with(
            defaults,
            "self_training",
            test_scales=TEST_SCALES,
            weight_decay=WEIGHT_DECAY,
            train_images=600,
        ),
        **{
            f"head weight {w}": _with(defaults, "self_training", head_weight=w)
            for w in NEIGHBOUR_WEIGHTS
        },
        **{
            f"min kept share {s}": _with(defaults, "crf", min_kept_share=s)
            for s in NEIGHBOUR_KEPT_SHARES
        },
        **{
            f"bilateral compat {c:g}": _with(defaults, "crf", bilateral_compat=c)
            for c in NEIGHBOUR_BILATERAL_COMPATS
        },
    }


def report(
    dataset: str, workspace: Workspace, timing: bool, only: Sequence[str] = ()
) -> list[dict[str, str]]:
    compared = configs()
    if timing:
        compared = {name: compared[name] for name in TIMING_CONFIGS}
    if only:
        kept = {BASELINE, ISSUE_11, *only}
        compared = {name: config for name, config in compared.items() if name in kept}
    measured = results(dataset, workspace, compared, None, TIMING_FOLDER if timing else "")
    base = next(r for r in measured if r.recipe == BASELINE)
    issue_11 = next(r for r in measured if r.recipe == ISSUE_11)
    table = [
        {
            "dataset": dataset,
            "config": r.recipe,
            "images": str(r.images),
            "final mIoU": f"{r.miou:.4f}",
            "vs defaults": f"{r.miou - base.miou:+.3f}",
            "90% interval": f"[{r.gain_low:+.3f}, {r.gain_high:+.3f}]",
            "vs issue 11": f"{r.miou - issue_11.miou:+.3f}",
            "kept": f"{r.fg_recall:.3f}",
            "emptied": f"{100 * r.emptied:.1f}%",
            "heads s": f"{r.head_seconds:.0f}",
            "crf s/img": f"{r.stage_seconds['crf']:.3f}",
            "run s": f"{r.run_seconds:.0f}",
            "run vs issue 11": f"{r.run_seconds / issue_11.run_seconds:.2f}x",
        }
        for r in measured
    ]
    if timing:
        return table
    comparison = compare_configs(workspace, compared, workspace.root / "compare")  # cached
    shown = (WITHOUT, BASELINE)
    figure = save_changed_masks(
        workspace, comparison, *shown, (BASELINE, "cam"), shown, "self_training.png"
    )
    print(f"{dataset}: masks self-training changed most: {figure}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("devsets"), help="workspaces made here")
    for dataset in DATASETS:
        parser.add_argument(f"--{dataset}", type=Path, help=f"an existing {dataset} workspace")
    parser.add_argument("--only", choices=DATASETS, help="one dataset only")
    parser.add_argument(
        "--timing",
        action="store_true",
        help=f"only {', '.join(TIMING_CONFIGS)}, timed in one run (WS/compare/{TIMING_FOLDER})",
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=(),
        choices=list(configs()),
        metavar="NAME",
        help=f"only these configs, besides {BASELINE} and {ISSUE_11}",
    )
    args = parser.parse_args()
    table = []
    for dataset in [args.only] if args.only else DATASETS:
        path = getattr(args, dataset) or args.root / dataset
        table += report(dataset, ensure_workspace(path, dataset), args.timing, args.configs)
    print()
    print(text_table(table))


if __name__ == "__main__":
    main()
