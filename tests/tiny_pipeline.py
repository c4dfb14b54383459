"""The smallest config sections the flow tests share (they test orchestration, not masks),
and the label flow run they share.

A from-scratch resnet18 (no weights file needed) trained for one epoch at 64 px,
and single-scale CAMs. Test modules import it by name (pytest puts tests/ on
the path).
"""

from __future__ import annotations

from pathlib import Path

TINY_TRAIN = {
    "backbone": "resnet18",
    "weights": None,
    "image_size": 64,
    "epochs": 1,
    "batch_size": 8,
}
TINY_CAM = {"scales": [1.0], "batch_size": 8}
# The affinity stage is on by default. The flow tests that share these sections test
# orchestration, and their stage tables are those without it; test_orchestration's affinity
# tests and the recipe tests run the stage itself.
NO_AFFINITY = {"enabled": False}
# Self-training is on by default too; off here for the same reason (its head trains for
# seconds even on tiny images). test_orchestration's self-training test and the recipe tests
# run it.
NO_SELF_TRAINING = {"enabled": False}
# Together: what the orchestration tests' configs share (each adds its shard size, demo and
# whatever it tests).
TINY_SECTIONS = {
    "train": TINY_TRAIN,
    "cam": TINY_CAM,
    "affinity": NO_AFFINITY,
    "self_training": NO_SELF_TRAINING,
}


def tiny_review_config(seed: int) -> dict:
    """A 12-image, 48 px demo in two shards: the review tests' workspace."""
    return {
        "shard_size": 6,
        "demo": {"num_images": 12, "image_size": 48, "seed": seed},
        "train": {**TINY_TRAIN, "image_size": 48, "batch_size": 6},
        "cam": {"scales": [1.0]},
        "self_training": NO_SELF_TRAINING,
    }


def label_run(workspace: Path | str, config_file: Path | str, runner=None) -> tuple:
    """The label flow on ``runner`` (threads when None); returns (final state, result)."""
    from flows.label import label_with_runner  # Prefect only when a test runs a flow

    state = label_with_runner(runner)(
        workspace=str(workspace), config_file=str(config_file), return_state=True
    )
    return state, state.result(raise_on_failure=False)
