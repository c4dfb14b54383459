"""Every remedy recipe against the defaults on both development datasets (GUIDE §7, §8).

The recipes are the files ``configs/methods/*.yaml``, found when the script
runs; each is read over the defaults, as `wsss compare` reads a file, and the
baseline is the defaults themselves (an empty config). For each dataset,
digits (the demo) and scenes, a workspace made by ``wsss demo --dataset NAME
--no-publish`` (made once, then reused) is compared over all its images with
every recipe and the defaults in one ``compare_configs`` call, so every
figure is measured in the same run (maps shared where the configs agree, a
second run computes nothing). Each gain over the defaults comes with a 90%
paired bootstrap interval over the images (``tuning.scores.paired_gain``); a
recipe beats the defaults only where that interval is above zero. A recipe
that changes the ``train`` section gets its own classifier under
``WS/compare/models/`` (trained the first time: minutes).

Printed per dataset and recipe: the final (crf) mIoU and its difference to
the defaults, object pixels kept (fg_recall), images emptied, training
seconds (the classifier's epochs, and those of the affinity and self-training
heads when the recipe uses them), the seconds per image of each map stage,
and the whole run's time as a ratio to the defaults' (training + per-image
costs x images); then each
recipe's verdict against the issue's goal (at least +0.05 final mIoU on both
datasets at no more than 2x the defaults' run time) beside the published
figure of its method. ``--write-readme`` puts both tables between the
README's ``bench_methods`` markers ("Remedies"); it refuses the partial runs
(``--limit``, ``--only``, ``--skip-training-recipes``). A ``--limit N`` run
keeps its maps in ``WS/compare/limit-N/``: the affinity head it trains on those
N images must not serve a later full run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_methods.py --root devsets --write-readme
    .venv/bin/python benchmarks/bench_methods.py --digits WS1 --scenes WS2   # existing ones
    .venv/bin/python benchmarks/bench_methods.py --digits WS --only digits --limit 30 \\
        --skip-training-recipes   # a smoke run: no retraining, 30 images
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bench_defaults import DATASETS, ensure_workspace, training_seconds
from text_table import text_table

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_core.config import PipelineConfig, load_config, read_config_file, stage_config_hash
from wsss_core.data.manifest import read_manifest
from wsss_core.model import segmentation_head
from wsss_core.model.affinity_head import head_lineage, load_head
from wsss_core.model.checkpoint import file_hash
from wsss_core.model.comparison import workspace_classifier_fits
from wsss_core.report.comparison import write_comparison
from wsss_core.stages.compare import Comparison, compare_configs, manifest_image_ids
from wsss_core.store.comparison import ComparisonLayout, TrainingWorkspace
from wsss_core.store.maps import read_label_shard
from wsss_core.store.workspace import ALL_MAP_STAGES, Workspace
from wsss_core.tuning.scores import LEVEL, Estimate, ImageScores, paired_gain, score_images

REPO = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO / "configs" / "methods"
README = REPO / "README.md"
BEGIN_MARKER = "<!-- bench_methods:begin -->"
END_MARKER = "<!-- bench_methods:end -->"
BASELINE = "defaults"

# The goal for the best recipe, on every development dataset.
GOAL_GAIN = 0.05  # final mIoU over the defaults
GOAL_TIME_RATIO = 2.0  # whole run's time, defaults = 1

# What each method's paper reports on PASCAL VOC 2012 (GUIDE §7), by the setting that turns
# it on: a recipe's claim follows from its file's keys, whatever the file is called.
PAPER_CLAIMS = {
    "cam.stochastic_passes": "FickleNet (Lee et al. CVPR 2019): val 64.9 (with DSRG, saliency)",
    "seeds.superpixels": "MCOF (Wang et al. CVPR 2018): val ~60 (with saliency, iterative)",
    "train.multi_dilation": "MDC (Wei et al. CVPR 2018): val ~60 (with saliency)",
    "affinity.enabled": "IRN (Ahn et al. CVPR 2019): mask 48.3 -> 66.5 (PSA: 48 -> 59.7)",
    "train.online_erasing_threshold": "ACoL (Zhang et al. CVPR 2018): localisation only",
    "train.erasing_rounds": "AE-PSL (Wei et al. CVPR 2017): val 55.0 (with saliency, PSL)",
    "cam.cross_image_weight": "CIAN (Fan et al. AAAI 2020): val 64.1",
    # A segmentation model trained on the pseudo masks is the papers' last step, scored on
    # val images it never saw: no paper reports it as a gain of the masks themselves.
    "self_training.enabled": "IRN (Ahn et al. CVPR 2019): DeepLab on its 66.5 masks, val 63.5",
}
NO_CLAIM = "not recorded (PAPER_CLAIMS in bench_methods.py)"


@dataclass(frozen=True)
class RecipeResult:
    """One config's figures on one dataset."""

    dataset: str
    recipe: str
    images: int  # images compared (the per-image costs are multiplied by these)
    miou: float  # final (crf) mIoU
    fg_recall: float
    emptied: float
    classifier_seconds: float
    head_seconds: float  # the affinity and self-training heads' training (0: neither is on)
    stage_seconds: dict[str, float]  # map stage -> seconds per image
    gain_low: float  # the final mIoU's gain over the defaults: paired bootstrap interval
    gain_high: float

    @property
    def run_seconds(self) -> float:
        """Training plus every map stage over the compared images."""
        per_image = sum(self.stage_seconds.values())
        return self.classifier_seconds + self.head_seconds + per_image * self.images


def recipe_files(directory: Path = RECIPES_DIR) -> list[Path]:
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise SystemExit(f"{directory}: no recipe (*.yaml) found")
    if any(path.stem == BASELINE for path in files):
        raise SystemExit(f"{directory}: a recipe may not be named {BASELINE}.yaml (the baseline)")
    return files


def recipe_configs(files: list[Path], skip_training: bool) -> dict[str, PipelineConfig]:
    """The defaults, then each recipe over them; with ``skip_training``, no retraining one."""
    defaults = PipelineConfig()
    configs = {BASELINE: defaults}
    for path in files:
        config = load_config(path)  # a bad recipe: a ConfigError naming the file
        if skip_training and retrains(config, defaults):
            print(f"{path.name}: skipped (--skip-training-recipes: it trains its own classifier)")
            continue
        configs[path.stem] = config
    return configs


def retrains(config: PipelineConfig, defaults: PipelineConfig) -> bool:
    return stage_config_hash(config, "train") != stage_config_hash(defaults, "train")


def classifier_workspace(
    workspace: Workspace, config: PipelineConfig, layout: ComparisonLayout
) -> Workspace:
    """Whose ``models/`` holds the classifier compare used for ``config`` (compare's rule)."""
    if workspace_classifier_fits(workspace, config):
        return workspace
    return TrainingWorkspace(layout.models_dir(config), workspace.manifest_path)


def head_seconds(
    workspace: Workspace, config: PipelineConfig, layout: ComparisonLayout, classifier: Path
) -> float:
    """The training seconds of the heads ``config``'s maps used (affinity, self-training)."""
    model = file_hash(classifier)
    # compare trains one head per compared image set, beside that set's maps.
    seconds = 0.0
    if config.affinity.enabled:
        name = f"{head_lineage(config, model)}.pt"
        paths = sorted(layout.root.glob(f"*/*/affinity/{name}"))
        seconds += sum(load_head(path).seconds for path in paths)
    if config.self_training.enabled:
        name = f"{segmentation_head.head_lineage(config, model)}.pt"
        paths = sorted(layout.root.glob(f"*/*/segmentation/{name}"))
        seconds += sum(segmentation_head.load_segmentation_head(p).seconds for p in paths)
    return seconds


def results(
    dataset: str,
    workspace: Workspace,
    configs: dict[str, PipelineConfig],
    limit: int | None,
    folder: str = "",
) -> list[RecipeResult]:
    """``folder``: a compare folder of its own (its maps, heads and timings), under WS/compare."""
    # A limited run keeps its own compare folder, so its figures never mix with a full run's.
    out_dir = workspace.root / "compare" / folder / (f"limit-{limit}" if limit else "")
    image_ids = manifest_image_ids(read_manifest(workspace), limit) if limit else None
    comparison = compare_configs(workspace, configs, out_dir, image_ids, log=print)
    write_comparison(comparison, out_dir)
    manifest = read_manifest(workspace)
    truth = {r.image_id: r.gt_uri for r in manifest.records if r.gt_uri}
    scores = {
        name: final_scores(comparison, name, truth, len(manifest.class_names) + 1)
        for name in configs
    }
    gains = {name: paired_gain(scores[name], scores[BASELINE]) for name in configs}
    return [
        recipe_result(dataset, workspace, comparison, name, config, gains[name])
        for name, config in configs.items()
    ]


def final_scores(
    comparison: Comparison, name: str, truth: dict[str, str], num_labels: int
) -> ImageScores:
    """Per-image confusions of ``name``'s final masks, in image id order (for pairing)."""
    row = next(r for r in comparison.rows if r.config == name and r.stage == "crf")
    shards = sorted((comparison.out_dir / row.maps).glob("part-*.parquet"))
    predictions = ((r.image_id, r.labels) for path in shards for r in read_label_shard(path))
    scores = score_images(predictions, truth, num_labels)
    return scores.subset(sorted(scores.image_ids))


def recipe_result(
    dataset: str,
    workspace: Workspace,
    comparison: Comparison,
    name: str,
    config: PipelineConfig,
    gain: Estimate,
) -> RecipeResult:
    rows = {row.stage: row for row in comparison.rows if row.config == name}
    final = rows["crf"]
    layout = ComparisonLayout(comparison.out_dir)
    trained = classifier_workspace(workspace, config, layout)
    return RecipeResult(
        dataset=dataset,
        recipe=name,
        images=comparison.images,
        miou=final.miou,
        fg_recall=final.fg_recall,
        emptied=final.emptied,
        classifier_seconds=training_seconds(trained),
        head_seconds=head_seconds(workspace, config, layout, trained.model_path),
        stage_seconds={stage: row.seconds_per_image for stage, row in rows.items()},
        gain_low=gain.low,
        gain_high=gain.high,
    )


def _number(value: float, template: str) -> str:
    return "?" if math.isnan(value) else template.format(value)


def table_rows(all_results: list[RecipeResult], markdown: bool) -> list[dict[str, str]]:
    """One row per dataset and recipe; differences and ratios against that dataset's defaults."""
    baselines = {r.dataset: r for r in all_results if r.recipe == BASELINE}
    rows = []
    for result in all_results:
        base = baselines[result.dataset]
        name = result.recipe if result.recipe == BASELINE else f"{result.recipe}.yaml"
        if markdown:
            name = f"**{name}**" if result.recipe == BASELINE else f"`{name}`"
        row = {
            "dataset": result.dataset,
            "recipe": name,
            "images": str(result.images),
            "final mIoU": f"{result.miou:.3f}",
            "vs defaults": f"{result.miou - base.miou:+.3f}",
            f"{LEVEL:.0%} interval": f"[{result.gain_low:+.3f}, {result.gain_high:+.3f}]",
            "object pixels kept": f"{result.fg_recall:.3f}",
            "images emptied": f"{100 * result.emptied:.1f}%",
            "training s": f"{result.classifier_seconds:.0f}"
            + (f" + head {result.head_seconds:.0f}" if result.head_seconds else ""),
        }
        for stage in ALL_MAP_STAGES:
            seconds = result.stage_seconds.get(stage)
            row[f"{stage} s/img"] = "-" if seconds is None else _number(seconds, "{:.3f}")
        ratio = result.run_seconds / base.run_seconds
        row["run time vs defaults"] = _number(ratio, "{:.2f}x")
        rows.append(row)
    return rows


def verdict_rows(
    all_results: list[RecipeResult], datasets: list[str], claims: dict[str, str]
) -> list[dict[str, str]]:
    """Per recipe: its paper's claim, its gain and time ratio per dataset, and the goal."""
    by_key = {(r.dataset, r.recipe): r for r in all_results}
    recipes = [r.recipe for r in all_results if r.dataset == datasets[0] and r.recipe != BASELINE]
    rows = []
    for recipe in recipes:
        row = {"recipe": f"{recipe}.yaml", "paper's claim (VOC 2012)": claims[recipe]}
        beats, meets = True, True
        for dataset in datasets:
            result, base = by_key[dataset, recipe], by_key[dataset, BASELINE]
            gain, ratio = result.miou - base.miou, result.run_seconds / base.run_seconds
            row[f"{dataset} gain"] = f"{gain:+.3f}"
            row[f"{dataset} time"] = _number(ratio, "{:.2f}x")
            beats &= result.gain_low > 0  # the paired interval clear of zero, not noise
            meets &= gain >= GOAL_GAIN and ratio <= GOAL_TIME_RATIO
        row["beats defaults on all (interval > 0)"] = "yes" if beats else "no"
        row["goal met"] = "yes" if meets else "no"
        rows.append(row)
    return rows


def paper_claim(path: Path) -> str:
    """The published figures of the methods the recipe file turns on."""
    keys = [
        f"{section}.{key}"
        for section, values in read_config_file(path).items()
        if isinstance(values, dict)
        for key in values
    ]
    return "; ".join(PAPER_CLAIMS[key] for key in keys if key in PAPER_CLAIMS) or NO_CLAIM


TEXT_COLUMNS = (
    "dataset",
    "recipe",
    "paper's claim (VOC 2012)",
    "beats defaults on all (interval > 0)",
    "goal met",
)


def markdown_table(rows: list[dict[str, str]]) -> str:
    """The rows under a header of their keys; figures right-aligned."""
    keys = list(rows[0])
    rule = ["---" if key in TEXT_COLUMNS else "---:" for key in keys]
    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row[key] for key in keys) + " |" for row in rows]
    return "\n".join(lines)


def readme_block(
    all_results: list[RecipeResult], datasets: list[str], claims: dict[str, str]
) -> str:
    images = ", ".join(f"{r.dataset} {r.images}" for r in all_results if r.recipe == BASELINE)
    return "\n\n".join(
        [
            f"Measured by `benchmarks/bench_methods.py` on {date.today().isoformat()} "
            f"(images per dataset: {images}; seconds on {os.cpu_count()} shared CPU cores; "
            "training s: the classifier's epochs, plus the affinity and self-training heads' "
            "when the recipe uses them; "
            "run time: training + every stage's seconds per image x images, the defaults = 1; "
            f"interval: {LEVEL:.0%} paired bootstrap over the images of the gain):",
            markdown_table(table_rows(all_results, markdown=True)),
            f"Goal: at least {GOAL_GAIN:+.2f} final mIoU over the defaults on both datasets "
            f"at no more than {GOAL_TIME_RATIO:g}x the defaults' run time:",
            markdown_table(verdict_rows(all_results, datasets, claims)),
        ]
    )


def write_readme(block: str, readme: Path = README) -> None:
    """Replace the text between the markers, nothing else."""
    text = readme.read_text()
    begin, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if begin < 0 or end < begin:
        raise SystemExit(f"{readme}: no {BEGIN_MARKER} ... {END_MARKER} section to write into")
    head, tail = text[: begin + len(BEGIN_MARKER)], text[end:]
    readme.write_text(f"{head}\n{block}\n{tail}")
    print(f"written: {readme} (between the bench_methods markers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("devsets"), help="workspaces made here")
    for dataset in DATASETS:
        parser.add_argument(f"--{dataset}", type=Path, help=f"an existing {dataset} workspace")
    parser.add_argument("--only", choices=DATASETS, help="one dataset only (a smoke run)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N usable images")
    parser.add_argument(
        "--skip-training-recipes",
        action="store_true",
        help="leave out recipes that train their own classifier (a smoke run)",
    )
    parser.add_argument(
        "--write-readme", action="store_true", help="put the tables between the README's markers"
    )
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit: must be at least 1, got {args.limit}")
    partial = [
        flag
        for flag, given in (
            ("--limit", args.limit is not None),
            ("--only", args.only is not None),
            ("--skip-training-recipes", args.skip_training_recipes),
        )
        if given
    ]
    if args.write_readme and partial:
        parser.error(f"--write-readme: the README gets full runs only, not {', '.join(partial)}")
    files = recipe_files()
    claims = {path.stem: paper_claim(path) for path in files}
    configs = recipe_configs(files, args.skip_training_recipes)
    datasets = [args.only] if args.only else list(DATASETS)
    all_results: list[RecipeResult] = []
    for dataset in datasets:
        path = getattr(args, dataset) or args.root / dataset
        all_results += results(dataset, ensure_workspace(path, dataset), configs, args.limit)
    print()
    print(text_table(table_rows(all_results, markdown=False)))
    print()
    print(text_table(verdict_rows(all_results, datasets, claims)))
    if args.limit:
        print(
            f"(--limit {args.limit}: the classifiers trained on all the training images, the "
            "per-image costs count only these: the run time ratios understate the stages' share)"
        )
    if args.write_readme:
        write_readme(readme_block(all_results, datasets, claims))


if __name__ == "__main__":
    main()
