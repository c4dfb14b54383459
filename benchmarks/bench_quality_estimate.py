"""How often the quality estimate's 90% interval holds the truth of the images it is about.

The run report estimates the mIoU of the images without a true mask from
those with one (a bootstrap over the sampled images, ``tuning/scores.py``).
Here a `bench_tune.py` root, whose full dataset keeps every true mask, plays
that many times: a random sample of 30 or 60 images is "the ones with true
masks", the estimate is made from them as the report makes it, and checked
against the mIoU of all the other images, under the final masks the
workspace holds now (those of its last run: `wsss run` it with the config to
check first; bench_tune.py leaves the tuned run's). Printed per sample size:
the share of intervals holding that figure (90% promised), the mean error of
the estimate and its spread, and the mean interval width.

    .venv/bin/python benchmarks/bench_quality_estimate.py --root devsets/tune
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_core.data.images import load_label_map
from wsss_core.metrics import mean_iou
from wsss_core.tuning.scores import LEVEL, ImageScores, estimate, score_images


def confusions(root: Path) -> ImageScores:
    """The workspace's final masks against the full truth, counted as the report counts them."""
    full, masks = root / "full", root / "workspace" / "masks"
    labels = 1 + len((full / "classes.txt").read_text().split())
    ids = sorted(path.stem for path in (full / "images").glob("*"))
    truth = {image_id: str(full / "masks" / f"{image_id}.png") for image_id in ids}
    predictions = ((image_id, load_label_map(masks / f"{image_id}.png")) for image_id in ids)
    return score_images(predictions, truth, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="a bench_tune.py --root")
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 60])
    parser.add_argument("--samples", type=int, default=200, help="random samples per size")
    args = parser.parse_args()
    scored = confusions(args.root)
    ids, matrices = scored.image_ids, scored.matrices
    everything = float(mean_iou(matrices.sum(0)))
    print(f"{args.root}: {len(ids)} images, final mIoU of all {everything:.4f}")
    print("| true masks | interval holds the rest's mIoU | mean error | error sd | width |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes:
        rng = random.Random(size)
        held, errors, widths = 0, [], []
        for sample in range(args.samples):
            picked = rng.sample(range(len(ids)), size)
            rest = np.setdiff1d(np.arange(len(ids)), picked)
            truth = float(mean_iou(matrices[rest].sum(0)))
            scores = ImageScores(tuple(ids[i] for i in picked), matrices[picked])
            figure = estimate(scores, seed=sample)
            held += figure.low <= truth <= figure.high
            errors.append(figure.miou - truth)
            widths.append(figure.high - figure.low)
        print(
            f"| {size} | {held / args.samples:.0%} (promised {LEVEL:.0%}) | "
            f"{np.mean(errors):+.4f} | {np.std(errors):.4f} | {np.mean(widths):.3f} |"
        )


if __name__ == "__main__":
    main()
