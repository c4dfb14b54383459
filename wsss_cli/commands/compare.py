"""`wsss compare`: several configs measured side by side on a workspace's own images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsss_cli.flow_calls import UsageError


class Compare:
    NAME = "compare"
    HELP = "score several configs' maps of a workspace's images side by side"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workspace", required=True, help="workspace directory")
        parser.add_argument(
            "configs",
            nargs="+",
            metavar="CONFIG",
            help="YAML config files (each over the defaults, not the workspace's saved config: "
            "as `wsss run --from-defaults --config FILE` reads it)",
        )
        parser.add_argument(
            "--out",
            metavar="DIR",
            help="where the maps, compare.md, compare.json and compare.png go "
            "(default: WS/compare; outside the workspace otherwise)",
        )
        parser.add_argument("--limit", type=int, metavar="N", help="only the first N usable images")
        parser.add_argument(
            "--images", metavar="FILE", help="only the image ids listed in FILE, one per line"
        )

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        # The library only: the stages are plain functions, no Prefect flow is needed.
        from wsss_core.data.manifest import read_manifest
        from wsss_core.report.comparison import comparison_table, describe, write_comparison
        from wsss_core.stages.compare import (
            check_out_dir,
            compare_configs,
            default_out_dir,
            manifest_image_ids,
        )
        from wsss_core.stages.compare_images import unknown_image_ids
        from wsss_core.store.workspace import Workspace

        configs = _load_configs(args.configs)
        if args.limit is not None and args.images is not None:
            raise UsageError("--limit and --images exclude each other")
        if args.limit is not None and args.limit < 1:
            raise UsageError(f"--limit: must be at least 1, got {args.limit}")
        workspace = Workspace(Path(args.workspace))
        try:
            out_dir = check_out_dir(workspace, Path(args.out or default_out_dir(workspace)))
        except ValueError as error:
            raise UsageError(f"--out: {error}") from None
        workspace.require_manifest()
        manifest = read_manifest(workspace)
        image_ids = None
        if args.limit is not None:
            image_ids = manifest_image_ids(manifest, args.limit)
        elif args.images is not None:
            image_ids = _read_image_ids(Path(args.images))
            unknown = unknown_image_ids(manifest, image_ids)
            if unknown:
                raise UsageError(
                    f"--images: {args.images}: {len(unknown)} id(s) are no usable image of "
                    f"the workspace (e.g. {unknown[0]!r})"
                )
        comparison = compare_configs(
            workspace, configs, out_dir, image_ids, show_progress=sys.stderr.isatty(), log=print
        )
        files = write_comparison(comparison, out_dir)
        print(f"\n{describe(comparison)}\n")
        print(comparison_table(comparison))
        print(f"\nwritten: {', '.join(str(path) for path in files.values())}")
        return 0


def _load_configs(paths: list[str]) -> dict:
    """File name as given -> its config; a missing or invalid file is a usage error."""
    from wsss_core.config import load_config

    if len(set(paths)) != len(paths):
        raise UsageError("a config file is given twice")
    configs = {}
    for path in paths:
        if not Path(path).is_file():
            raise UsageError(f"{path}: no such config file")
        try:
            configs[path] = load_config(path)
        except ValueError as error:  # the message starts with the file's name
            raise UsageError(str(error)) from None
    return configs


def _read_image_ids(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise UsageError(f"--images: {path}: cannot read ({error.strerror})") from None
    ids = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not ids:
        raise UsageError(f"--images: {path}: no image id in it")
    return ids
