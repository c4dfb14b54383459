"""`wsss ingest SOURCE PATH --workspace WS`: a dataset into a workspace manifest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from wsss_cli.commands.pipeline import DEMO_DATASETS
from wsss_cli.config_options import add_config_arguments, command_config
from wsss_cli.flow_calls import UsageError, checked_options

if TYPE_CHECKING:
    from wsss_core.config import PipelineConfig
    from wsss_core.data.sources import IngestOptions

SOURCES = ("voc", "coco", "folder", "fiftyone", "demo")
PATH_HELP = (
    "voc: the VOC root (JPEGImages/, Annotations/); coco: the instances JSON or the dataset "
    "folder; folder: the folder with images/ and labels.csv|jsonl; fiftyone: the dataset "
    "name; demo: where to write the demo data (default <workspace>/demo-source)"
)


def _options(args: argparse.Namespace) -> IngestOptions:
    from wsss_core.data.sources import IngestOptions

    classes = args.classes
    if classes and classes.lower() != "voc":
        classes = _absolute(classes)
    values = {
        "split": args.split,
        "classes": classes,
        "separator": args.separator,
        "include_difficult": not args.no_difficult,
        "images": _absolute(args.images),
        "labels": _absolute(args.labels),
        "masks": _absolute(args.masks),
        "rasterize_masks": args.rasterize_masks,
        "labels_field": args.labels_field,
        "gt_field": args.gt_field,
        "replace": args.replace,
        "workers": args.workers,
    }
    if args.max_pixels is not None:
        values["max_pixels"] = args.max_pixels
    return checked_options(IngestOptions, values)


def _absolute(value: str | None) -> str | None:
    return str(Path(value).expanduser().resolve()) if value else None


def _config(args: argparse.Namespace) -> PipelineConfig:
    """The config (see config_options), --database-dir / --database-uri / --dataset on top."""
    review = {}
    if args.database_dir:
        review["database_dir"] = _absolute(args.database_dir)
    if args.database_uri:
        review["database_uri"] = args.database_uri
    flags: dict = {"review": review} if review else {}
    if args.dataset:
        flags["demo"] = {"kind": args.dataset}
    return command_config(args, flags).config


class Ingest:
    NAME = "ingest"
    HELP = "ingest a dataset (voc, coco, folder, fiftyone, demo) into a workspace"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("source", choices=SOURCES, help="the dataset's layout")
        parser.add_argument("path", nargs="?", help=PATH_HELP)
        parser.add_argument("--workspace", required=True, help="workspace directory")
        parser.add_argument(
            "--split",
            help="voc: comma-separated ImageSets lists (default: all but trainval); coco: split "
            "name, or which annotations/instances_<split>.json; folder/fiftyone: split of "
            "images with none",
        )
        parser.add_argument(
            "--classes", help="'voc' or a classes file (one name a line); default: the source's"
        )
        parser.add_argument("--separator", default=";", help="folder: label separator")
        parser.add_argument(
            "--no-difficult", action="store_true", help="voc: ignore objects marked difficult"
        )
        parser.add_argument("--images", help="folder/coco: images folder")
        parser.add_argument("--labels", help="folder: labels CSV/JSONL; coco: instances JSON")
        parser.add_argument("--masks", help="folder: ground-truth masks folder")
        parser.add_argument(
            "--rasterize-masks",
            action="store_true",
            help="coco: draw ground-truth masks from polygons / RLE",
        )
        parser.add_argument(
            "--labels-field", default="ground_truth", help="fiftyone: Classifications field"
        )
        parser.add_argument("--gt-field", help="fiftyone: Segmentation field (ground truth)")
        parser.add_argument("--database-dir", help="fiftyone: the database folder")
        parser.add_argument("--database-uri", help="fiftyone: a MongoDB URI instead")
        parser.add_argument(
            "--max-pixels", type=int, help="larger images are quarantined (default 89478485)"
        )
        parser.add_argument(
            "--replace", action="store_true", help="start a new manifest instead of merging"
        )
        parser.add_argument("--workers", type=int, default=2, help="decoding threads")
        parser.add_argument(
            "--dataset",
            choices=DEMO_DATASETS,
            help="demo: which demo data, overrides demo.kind (digits: MNIST on gradients, the "
            "default; scenes: textured shapes on photos)",
        )
        add_config_arguments(
            parser,
            "YAML config (its demo and review sections), layered over the workspace's "
            "config.yaml: the file's keys win, the rest is kept",
        )

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        if args.path is None and args.source != "demo":
            raise UsageError(f"PATH is required for a {args.source} source")
        if args.dataset and args.source != "demo":
            raise UsageError(f"--dataset is for the demo source, not {args.source}")
        options = _options(args)  # bad values are usage errors, before the flow starts
        config = _config(args)
        from flows.ingest import ingest_data

        workspace = Path(args.workspace).expanduser().resolve()
        path = args.path if args.source == "fiftyone" else _absolute(args.path)
        summary = ingest_data(
            source=args.source, path=path, workspace=str(workspace), options=options, config=config
        )
        for line in summary.lines():
            print(line)
        print(f"manifest: {workspace / 'manifest.parquet'}")
        if sum(summary.quarantined.values()):
            print(f"reasons per image: {workspace / 'quarantine.parquet'}")
        return 0
