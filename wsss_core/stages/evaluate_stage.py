"""Stage ``evaluate``: mIoU of each stage's label maps against the ground truth.

``evaluation.parquet`` holds one row per (stage, label):

========== ======= ======================================================
column     type    meaning
========== ======= ======================================================
stage      string  ``cam`` (thresholded CAM), ``affinity`` (thresholded walked
                   CAM, when that stage is on), ``seeds``, ``grown``, ``crf``
label      int32   label value (0 background, k + 1 class k)
name       string  ``background`` or the class name
iou        float64 IoU over all evaluated images (NaN: label never seen)
========== ======= ======================================================

Metadata: ``schema_version``, ``images`` evaluated, ``pending_shards`` (shards
left out because some stage output is missing or out of date), and per stage
its ``miou``, ``pixel_accuracy`` and ``coverage`` (share of pixels not 255).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from wsss_core.config import PipelineConfig
from wsss_core.data.images import load_label_map
from wsss_core.data.manifest import read_manifest
from wsss_core.metrics import ConfusionMatrix
from wsss_core.stages.common import checked_model_hash, map_stages, shard_maps_current
from wsss_core.store.maps import CAM_TABLE_STAGES, CamRecord, read_cam_shard, read_label_shard
from wsss_core.store.parquet_io import write_table
from wsss_core.store.workspace import Workspace

EVALUATION_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StageScore:
    stage: str
    miou: float
    pixel_accuracy: float
    coverage: float
    iou_per_label: tuple[float, ...]


@dataclass(frozen=True)
class Evaluation:
    images: int
    label_names: tuple[str, ...]
    scores: tuple[StageScore, ...]
    pending_shards: int = 0  # shards not scored: some stage output missing or out of date

    def score(self, stage: str) -> StageScore:
        return next(s for s in self.scores if s.stage == stage)

    def table(self) -> str:
        """A plain-text table, one row per stage."""
        lines = [f"{'stage':<8}{'mIoU':>8}{'pixel acc':>11}{'coverage':>10}"]
        for s in self.scores:
            lines.append(f"{s.stage:<8}{s.miou:>8.4f}{s.pixel_accuracy:>11.4f}{s.coverage:>10.4f}")
        return "\n".join(lines)


def thresholded_cam(cams: CamRecord, threshold: float) -> np.ndarray:
    """The classic CAM mask: argmax over [threshold (background), CAM_1, ..., CAM_K]."""
    _, height, width = cams.cams.shape
    if not cams.class_ids:
        return np.zeros((height, width), np.uint8)
    stacked = np.concatenate([np.full((1, height, width), threshold, np.float32), cams.cams])
    lookup = np.asarray((0, *[c + 1 for c in cams.class_ids]), np.uint8)
    return lookup[stacked.argmax(axis=0)]


def stage_predictions(
    workspace: Workspace, config: PipelineConfig, stage: str, shard_index: int
) -> Iterator[tuple[str, np.ndarray]]:
    """(image id, label map) of one stage's shard; per-class maps thresholded at cam.threshold."""
    path = workspace.shard_path(stage, shard_index)
    if stage in CAM_TABLE_STAGES:
        for cams in read_cam_shard(path):
            yield cams.image_id, thresholded_cam(cams, config.cam.threshold)
    else:
        for row in read_label_shard(path):
            yield row.image_id, row.labels


def _stage_predictions(
    workspace: Workspace, config: PipelineConfig, shard_index: int
) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(image id, {stage: label map}) for every image of a shard that has a final mask.

    An image a stage failed on has no final mask: it is listed as failed, not scored.
    """
    stages = map_stages(config)
    maps = {
        stage: dict(stage_predictions(workspace, config, stage, shard_index)) for stage in stages
    }
    for image_id in maps["cam"]:
        if all(image_id in maps[stage] for stage in stages):
            yield image_id, {stage: maps[stage][image_id] for stage in stages}


def evaluate_workspace(
    workspace: Workspace, config: PipelineConfig, model_hash: str | None = None
) -> Evaluation | None:
    """Score every stage on the images that have ground truth; None when none has.

    Only shards whose four stage outputs are up to date (this config, this
    model, these images) are scored, so a number never mixes old and new maps.
    Without ``model_hash`` the workspace's model is checked as the label flow
    checks it: an unfinished run's model is refused, not scored.
    """
    manifest = read_manifest(workspace)
    records = manifest.by_id()
    if not any(record.gt_uri for record in manifest.records):
        return None
    model = model_hash or checked_model_hash(workspace)
    num_labels = len(manifest.class_names) + 1
    matrices = {stage: ConfusionMatrix(num_labels) for stage in map_stages(config)}
    images = pending = 0
    for shard_index, shard in enumerate(manifest.shards(config.shard_size)):
        if not shard:
            continue
        if not shard_maps_current(workspace, config, model, shard_index, shard):
            pending += 1
            continue
        for image_id, maps in _stage_predictions(workspace, config, shard_index):
            gt_uri = records[image_id].gt_uri
            if gt_uri is None:
                continue
            gt = load_label_map(gt_uri)
            for stage, prediction in maps.items():
                matrices[stage].update(gt, prediction)
            images += 1
    if images == 0:
        raise ValueError(
            f"no image with ground truth has up-to-date maps ({pending} shard(s) pending "
            "for this config and model): run `wsss label` (or `wsss run`) first"
        )
    names = ("background", *manifest.class_names)
    scores = tuple(
        StageScore(
            stage,
            matrices[stage].mean_iou(),
            matrices[stage].pixel_accuracy(),
            matrices[stage].coverage(),
            tuple(float(x) for x in matrices[stage].iou_per_class()),
        )
        for stage in matrices
    )
    evaluation = Evaluation(images, names, scores, pending)
    _write_evaluation(workspace, evaluation)
    return evaluation


def _write_evaluation(workspace: Workspace, evaluation: Evaluation) -> None:
    rows = [
        {"stage": s.stage, "label": label, "name": evaluation.label_names[label], "iou": iou}
        for s in evaluation.scores
        for label, iou in enumerate(s.iou_per_label)
    ]
    schema = pa.schema(
        [
            ("stage", pa.string()),
            ("label", pa.int32()),
            ("name", pa.string()),
            ("iou", pa.float64()),
        ]
    )
    metadata = {
        "schema_version": EVALUATION_SCHEMA_VERSION,
        "images": evaluation.images,
        "pending_shards": evaluation.pending_shards,
        "stages": {
            s.stage: {"miou": s.miou, "pixel_accuracy": s.pixel_accuracy, "coverage": s.coverage}
            for s in evaluation.scores
        },
    }
    write_table(workspace.evaluation_path, pa.Table.from_pylist(rows, schema=schema), metadata)
