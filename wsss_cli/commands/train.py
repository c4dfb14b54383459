"""`wsss train`: train, resume or reuse the classifier of an ingested workspace."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from wsss_cli.config_options import add_config_arguments, command_config
from wsss_cli.flow_calls import UsageError, checked_options
from wsss_core.config import BACKBONE_NAMES

BACKBONE_CHOICES = BACKBONE_NAMES  # train.backbone's bound, defined in wsss_core/config.py


def _weights(value: str) -> str | None:
    return None if value.lower() in ("none", "null", "") else value


def _overrides(args: argparse.Namespace) -> dict:
    values = {
        "backbone": args.backbone,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "seed": args.seed,
    }
    overrides = {key: value for key, value in values.items() if value is not None}
    if args.weights is not None:
        overrides["weights"] = _weights(args.weights)
    return overrides


def _check_options(overrides: dict, device: str | None) -> None:
    """Bad flag values as usage errors, before the flow starts.

    The overrides are checked on their own, so an error names the flag; merged
    with the config file they are checked again (a bad file value exits 2 too).
    """
    from wsss_core.config import TrainConfig

    checked_options(TrainConfig, overrides, {"learning_rate": "--lr"})
    if device not in (None, "auto"):
        import torch

        try:
            torch.device(device)
        except RuntimeError as error:  # a well-formed but absent CUDA fails later, exit 1
            raise UsageError(f"--device: {error}") from None


def _format_ap(class_names, per_class_ap) -> str:
    parts = [
        f"{name} {ap:.3f}" if math.isfinite(ap) else f"{name} n/a"
        for name, ap in zip(class_names, per_class_ap, strict=False)
    ]
    return ", ".join(parts)


def print_outcome(outcome) -> None:
    if outcome.trained:
        how = f"trained in {outcome.seconds:.0f} s"
        if outcome.resumed_from:
            how = f"resumed after epoch {outcome.resumed_from}, {how}"
    else:
        how = "reused, up to date"
    print(
        f"classifier: validation mAP {outcome.val_map:.4f} "
        f"(best epoch {outcome.best_epoch}/{outcome.epochs}, {outcome.backbone}, "
        f"{outcome.image_size} px; {how})"
    )
    if outcome.per_class_ap:
        print(f"per-class AP: {_format_ap(outcome.class_names, outcome.per_class_ap)}")
    models = Path(outcome.models_dir)
    print(f"model: {models / 'classifier.pt'}")
    print(f"curves: {models / 'training_curves.png'}  history: {models / 'history.parquet'}")


class Train:
    NAME = "train"
    HELP = "train the classifier on an ingested workspace (resume after a kill with --resume)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workspace", required=True, help="workspace directory")
        add_config_arguments(parser)
        parser.add_argument(
            "--backbone",
            choices=BACKBONE_CHOICES,
            metavar="NAME",
            help=f"overrides train.backbone: {', '.join(BACKBONE_CHOICES)}",
        )
        parser.add_argument(
            "--weights",
            help="initial weights: a torchvision name (IMAGENET1K_V1), a .pth file, or none",
        )
        parser.add_argument("--epochs", type=int, help="default: chosen from the dataset size")
        parser.add_argument("--image-size", type=int, help="default: from the image sizes")
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--lr", type=float, help="head learning rate (train.learning_rate)")
        parser.add_argument("--seed", type=int)
        parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--resume",
            action="store_true",
            help="continue the interrupted run in models/last.pt (error if there is none)",
        )
        mode.add_argument(
            "--force", action="store_true", help="train from scratch even when up to date"
        )

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        overrides = _overrides(args)
        _check_options(overrides, args.device)
        from flows.train import train
        from wsss_core.model.device import resolve_device
        from wsss_core.store.workspace import Workspace

        # The flags are the top layer, over --config and the saved config: saved with the
        # run, so a later `wsss run` reuses this model.
        flags: dict = {"train": overrides} if overrides else {}
        if args.device is not None:
            flags["device"] = args.device
        config = command_config(args, flags).config
        resolve_device(config.device)
        Workspace(Path(args.workspace)).require_manifest()
        try:
            outcome = train(
                workspace=str(Path(args.workspace).resolve()),
                config=config,
                resume=True if args.resume else None,
                force=args.force,
            )
        except KeyboardInterrupt:
            print(
                "every finished epoch is saved in models/last.pt; continue with: "
                f"wsss train --workspace {args.workspace} --resume",
                file=sys.stderr,
            )
            raise
        print_outcome(outcome)
        return 0
