"""Stage ``crf``: the final masks (Parquet and ``masks/<image_id>.png``).

Per image: the first pass (``wsss_core/stages/first_pass.py``): dense-CRF
refinement at each candidate background power, the best-outlined result
kept, then the check that no labelled class vanished. A vanished class is
restored from the CRF of the affinity stage's walked maps when that stage is
on, as it is by default (final mIoU +0.017 on the digits, +0.016 on the
scenes; ARCHITECTURE.md, "Thresholds"), then from its grown region.

With ``self_training.enabled`` that mask is a first pass: a segmentation
head trained on the first-pass masks of the workspace's images (before the
stage, ``wsss_core/stages/self_training_stage.py``) gives its own view, the
two are mixed and refined by the CRF once more (:class:`SecondPass`). The
first passes the head learnt from are kept beside it and taken from there.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from wsss_core.config import PipelineConfig
from wsss_core.crf import ImageCrf
from wsss_core.data.images import save_label_map, voc_palette
from wsss_core.data.manifest import ImageRecord, read_manifest
from wsss_core.model import segmentation_head as heads
from wsss_core.model.checkpoint import load_checkpoint
from wsss_core.model.device import cpu_threads
from wsss_core.recovery import restore_vanished_classes
from wsss_core.stages.common import (
    ShardOutcome,
    current_model_hash,
    expected_lineage,
    is_fresh,
    shard_records,
)
from wsss_core.stages.first_pass import (
    FirstPass,
    KeptFirstPasses,
    first_pass_mask,
    first_passes_path,
)
from wsss_core.stages.image_failures import read_image
from wsss_core.stages.label_stage import run_label_stage
from wsss_core.store.maps import CamRecord, LabelRecord, read_cam_shard, read_label_shard
from wsss_core.store.parquet_io import iter_batches
from wsss_core.store.workspace import Workspace


def run_crf_shard(
    workspace: Workspace,
    config: PipelineConfig,
    shard_index: int,
    show_progress: bool = False,
    model_hash: str | None = None,
) -> ShardOutcome:
    # The crf section is the CRF's own parameters (a CrfParams) plus the choices around it.
    palette, settings = voc_palette(), config.crf
    walked = _WalkedMaps(workspace, shard_index) if config.affinity.enabled else None
    second_pass = (
        SecondPass(workspace, config, model_hash or current_model_hash(workspace))
        if config.self_training.enabled
        else None
    )

    def per_image(record: ImageRecord, cams: CamRecord, grown: LabelRecord | None) -> LabelRecord:
        assert grown is not None
        image = read_image(record)
        crf = ImageCrf(image, settings)  # its kernels serve both passes
        walk = None if walked is None else (lambda: walked.of(record.image_id))
        first = None if second_pass is None else second_pass.kept.get(record, cams, grown.labels)
        if first is None:
            first = first_pass_mask(image, cams, grown.labels, walk, settings, crf)
        labels, confidence, recovered = first.labels, first.confidence, first.recovered
        if second_pass is not None:
            labels, confidence, recovered = second_pass.refine(crf, image, cams.class_ids, first)
        assert confidence is not None  # only a kept first pass has none, and it had a second
        save_label_map(workspace.mask_path(record.image_id), labels, palette)
        return LabelRecord(record.image_id, labels, confidence, recovered, first.background_power)

    # The head's convolutions run on a fixed thread count: bit-identical on every runner.
    fixed = cpu_threads(config.self_training.cpu_threads) if second_pass else nullcontext()
    with fixed:
        outcome = run_label_stage(
            workspace,
            config,
            shard_index,
            "crf",
            "grown",
            per_image,
            show_progress,
            model_hash,
            also_needs=("affinity",) if walked is not None else (),
        )
    restore_missing_masks(workspace, config, shard_index)
    return outcome


class SecondPass:
    """The self-training pass: the first-pass mask mixed with the head's view, CRF again.

    The head (trained before the stage by
    :func:`wsss_core.stages.self_training_stage.ensure_segmentation_head`) and
    the classifier's trunk are loaded at the first image, so a shard that is
    current loads neither. ``kept``: the first passes the head learnt from.
    """

    def __init__(self, workspace: Workspace, config: PipelineConfig, model_hash: str) -> None:
        self.workspace, self.config = workspace, config
        lineage = heads.head_lineage(config, model_hash)
        self.head_path = workspace.segmentation_head_path(lineage)
        self.kept = KeptFirstPasses(first_passes_path(self.head_path), lineage)
        self._models: tuple[torch.nn.Module, heads.SegmentationHead] | None = None

    def _loaded(self) -> tuple[torch.nn.Module, heads.SegmentationHead]:
        if self._models is None:
            names = read_manifest(self.workspace).class_names
            checkpoint = load_checkpoint(self.workspace.model_path, "cpu", names)
            head = heads.load_segmentation_head(self.head_path).head
            self._models = checkpoint.model.features, head
        return self._models

    def refine(
        self, crf: ImageCrf, image: np.ndarray, class_ids: tuple[int, ...], first: FirstPass
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """(labels, confidence, recovered classes); a class the pass empties keeps its first one.

        ``crf``: the image's CRF, built with the ``crf`` section (as the first pass's).
        """
        settings, crf_settings = self.config.self_training, self.config.crf
        backbone, head = self._loaded()
        probs = heads.head_probabilities(
            head,
            backbone,
            image,
            class_ids,
            settings.input_side,
            settings.max_upscale,
            settings.test_scales,
        )
        mixed = heads.mixed_probabilities(probs, first.labels, class_ids, settings.head_weight)
        result = crf.refine(mixed, class_ids, crf_settings.min_confidence)
        labels, kept = restore_vanished_classes(
            result.labels, first.labels, class_ids, crf_settings.min_kept_share
        )
        return labels, result.confidence, tuple(sorted({*first.recovered, *kept}))


class _WalkedMaps:
    """A shard's affinity maps by image id, read the first time one is needed."""

    def __init__(self, workspace: Workspace, shard_index: int) -> None:
        self.path = workspace.shard_path("affinity", shard_index)
        self.maps: dict[str, np.ndarray] | None = None

    def of(self, image_id: str) -> np.ndarray:
        if self.maps is None:
            self.maps = {row.image_id: row.cams for row in read_cam_shard(self.path)}
        return self.maps[image_id]


def restore_missing_masks(workspace: Workspace, config: PipelineConfig, shard_index: int) -> int:
    """Write ``masks/<image_id>.png`` again from the crf shard where the file is gone.

    The PNGs are a copy of the shard's label maps for people and tools. A mask
    deleted while its shard stayed current (by hand, or by an ingest that saw
    the image leave and then come back) would otherwise never return. Costs
    one ``stat`` per image when nothing is missing.
    """
    _, records = shard_records(workspace, config, shard_index)
    missing = {r.image_id for r in records if not workspace.mask_path(r.image_id).exists()}
    path = workspace.shard_path("crf", shard_index)
    if not missing or not path.exists():
        return 0
    palette, restored = voc_palette(), 0
    for row in read_label_shard(path):
        if row.image_id in missing:
            save_label_map(workspace.mask_path(row.image_id), row.labels, palette)
            restored += 1
    return restored


@dataclass(frozen=True)
class RecoveredMask:
    """A final mask in which a labelled class was restored from its grown region."""

    image_id: str
    class_names: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.image_id} ({', '.join(self.class_names)})"


def recovered_masks(
    workspace: Workspace, config: PipelineConfig, model_hash: str
) -> tuple[RecoveredMask, ...]:
    """Every current final mask with a recovered class (reads two columns per shard)."""
    manifest = read_manifest(workspace)
    found = []
    for index, records in enumerate(manifest.shards(config.shard_size)):
        path = workspace.shard_path("crf", index)
        if not records or not is_fresh(path, expected_lineage(config, "crf", model_hash, records)):
            continue
        for batch in iter_batches(path, 256, columns=["image_id", "recovered"]):
            for row in batch.to_pylist():
                if row["recovered"]:
                    names = tuple(manifest.class_names[c] for c in row["recovered"])
                    found.append(RecoveredMask(row["image_id"], names))
    return tuple(found)
