"""`wsss config show`: the effective configuration as commented YAML, each value's source."""

from __future__ import annotations

import argparse

from wsss_cli.config_options import FROM_DEFAULTS_HELP, config_path

# What each source word in the output's brackets means.
SOURCE_WORDS = {
    "file": "--config FILE",
    "saved": "WS/config.yaml, saved by the last run",
    "default": "built in",
}


class Config:
    NAME = "config"
    HELP = "show the effective configuration and where each value comes from"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        show = actions.add_parser(
            "show",
            help="print it as YAML, every section and field described in a comment",
            description="Print the effective configuration as YAML with comments, each value "
            "marked [default], [saved] or [file] by where it comes from; the output is a "
            "valid config file.",
        )
        show.add_argument(
            "--config",
            metavar="FILE",
            help="YAML config file (any subset of sections), over the workspace's saved "
            "config with --workspace, else over the defaults",
        )
        show.add_argument(
            "--workspace",
            help="layer over this workspace's saved config (config.yaml), as its commands do",
        )
        show.add_argument("--from-defaults", action="store_true", help=FROM_DEFAULTS_HELP)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from wsss_core.config_layers import ConfigLayer, layered_config
        from wsss_core.config_yaml import commented_yaml

        if args.workspace:
            from wsss_cli.config_options import command_config

            layered = command_config(args)
        else:
            file = config_path(args)
            layered = layered_config([ConfigLayer.from_file("file", file)] if file else [])
        sources = layered.sources()
        used = [word for word in SOURCE_WORDS if word in sources.values()]
        print(f"# wsss configuration: {layered.describe()}")
        print("# " + "; ".join(f"[{word}]: {SOURCE_WORDS[word]}" for word in used))
        print(commented_yaml(layered.config, sources), end="")
        return 0
