"""`wsss export`: pseudo-masks in the PASCAL VOC segmentation layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from wsss_cli.config_options import add_config_arguments, command_config


class Export:
    NAME = "export"
    HELP = "write masks as VOC SegmentationClass PNGs plus classes.txt"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workspace", required=True, help="workspace directory")
        parser.add_argument("--out", required=True, help="output directory")
        parser.add_argument("--format", choices=("voc",), default="voc", help="layout")
        parser.add_argument(
            "--stage",
            choices=("cam", "affinity", "seeds", "grown", "crf"),
            default="crf",
            help="which stage's masks (default: crf, the final ones)",
        )
        parser.add_argument(
            "--only-approved", action="store_true", help="only masks a reviewer approved"
        )
        add_config_arguments(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from wsss_core.export.voc import export_voc
        from wsss_core.store.workspace import Workspace

        workspace = Workspace(Path(args.workspace))
        summary = export_voc(
            workspace,
            command_config(args).config,
            Path(args.out),
            stage=args.stage,
            only_approved=args.only_approved,
        )
        print(
            f"exported {summary.exported} mask(s) to {summary.out_dir / 'SegmentationClass'}"
            f" (skipped: {summary.skipped_rejected} rejected, "
            f"{summary.skipped_unapproved} not approved, {summary.missing} not computed, "
            f"{summary.outdated} outdated)"
        )
        if summary.outdated:
            print(
                f"{summary.outdated} map(s) predate a change of their image or labels, or were "
                "made with another config or model: `wsss run` recomputes them"
            )
        return 0
