"""`wsss config show`: the effective configuration as commented YAML."""

from __future__ import annotations

import argparse


class Config:
    NAME = "config"
    HELP = "show the effective configuration (defaults, or a file's values over them)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        show = actions.add_parser(
            "show",
            help="print it as YAML, every section and field described in a comment",
            description="Print the effective configuration as YAML with comments; the output "
            "is a valid config file.",
        )
        show.add_argument("--config", help="YAML config file (any subset of sections)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from wsss_core.config import load_config
        from wsss_core.config_yaml import commented_yaml

        config = load_config(args.config)
        source = f"{args.config} over the defaults" if args.config else "the defaults"
        print(f"# wsss configuration: {source}")
        print(commented_yaml(config), end="")
        return 0
