"""Train only when needed: a checkpoint made from the same data and config is reused."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm

from wsss_core.config import PipelineConfig, stage_config_hash
from wsss_core.data.manifest import read_manifest
from wsss_core.model.training import load_checkpoint, train_classifier
from wsss_core.store.workspace import Workspace


@dataclass(frozen=True)
class TrainOutcome:
    trained: bool
    val_map: float
    model_hash: str
    seconds: float = 0.0


def _tqdm_progress(total: int, description: str) -> tqdm:
    return tqdm(total=total, desc=description, unit="batch", leave=False)


def train_or_reuse(
    workspace: Workspace,
    config: PipelineConfig,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
    force: bool = False,
) -> TrainOutcome:
    """Reuse ``models/classifier.pt`` when it was trained on this manifest with this config."""
    manifest = read_manifest(workspace)
    lineage = {
        "config_hash": stage_config_hash(config, "train"),
        "manifest_hash": manifest.content_hash,
    }
    if not force and workspace.model_path.exists():
        current = load_checkpoint(workspace.model_path)
        if current.lineage == lineage and current.class_names == manifest.class_names:
            return TrainOutcome(False, current.val_map, current.file_hash)
    started = time.perf_counter()
    result = train_classifier(
        manifest,
        config.train,
        workspace.model_path,
        device=config.device,
        progress=_tqdm_progress if show_progress else None,
        log=log,
        lineage=lineage,
    )
    loaded = load_checkpoint(result.checkpoint)
    return TrainOutcome(True, result.val_map, loaded.file_hash, time.perf_counter() - started)
