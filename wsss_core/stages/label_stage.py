"""The shared loop of the stages that turn maps into label maps (seeds, grown, crf)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from tqdm import tqdm

from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import ImageRecord
from wsss_core.stages.common import (
    ShardOutcome,
    current_model_hash,
    expected_lineage,
    plan_rewrite,
    shard_records,
)
from wsss_core.stages.image_failures import ImageGuard, failures_metadata
from wsss_core.store.maps import (
    CamRecord,
    LabelRecord,
    read_cam_shard,
    read_label_shard,
    stored_image_ids,
    write_label_shard,
)
from wsss_core.store.workspace import Workspace

Row = TypeVar("Row", CamRecord, LabelRecord)

# (image record, its CAMs, the previous label stage's record or None) -> new label record
PerImage = Callable[[ImageRecord, CamRecord, LabelRecord | None], LabelRecord]


def run_label_stage(
    workspace: Workspace,
    config: PipelineConfig,
    shard_index: int,
    stage: str,
    upstream: str | None,
    per_image: PerImage,
    show_progress: bool = False,
    model_hash: str | None = None,
    also_needs: tuple[str, ...] = (),
) -> ShardOutcome:
    """Apply ``per_image`` to every image of a shard and write ``maps/<stage>/part-<shard>``.

    Skips the work when the existing output's lineage (config of this stage and
    those above it, model, shard inputs) is unchanged and no image is pending.
    An image the stages above could not compute is skipped; one ``per_image``
    fails on is recorded as failed (:mod:`wsss_core.stages.image_failures`).
    ``model_hash``: the checkpoint's hash when the caller already has it (else
    it is read here). ``also_needs``: further stages whose rows an image needs.
    """
    started = time.perf_counter()
    _, records = shard_records(workspace, config, shard_index)
    model = model_hash or current_model_hash(workspace)
    lineage = expected_lineage(config, stage, model, records)
    path = workspace.shard_path(stage, shard_index)
    needs = ("cam", *((upstream,) if upstream else ()), *also_needs)
    available = set.intersection(
        *(stored_image_ids(workspace.shard_path(name, shard_index)) for name in needs)
    )
    plan = plan_rewrite(path, lineage, records, stage, shard_index, available)
    if plan.unchanged():
        return ShardOutcome(stage, shard_index, len(records), False, failed=plan.known_failed)
    todo = plan.todo
    cams = rows_by_id(read_cam_shard(workspace.shard_path("cam", shard_index)), todo)
    previous = (
        rows_by_id(read_label_shard(workspace.shard_path(upstream, shard_index)), todo)
        if upstream
        else {}
    )
    guard = ImageGuard(stage, shard_index)
    outputs = []
    for record in tqdm(todo, desc=f"{stage} {shard_index}", unit="img", disable=not show_progress):
        image_id = record.image_id
        output = guard.run(record, per_image, record, cams[image_id], previous.get(image_id))
        if output is not None:
            outputs.append(output)
    failed = plan.known_failed + tuple(guard.failures)
    write_label_shard(
        path, stage, outputs, lineage, plan.inputs, plan.reused(), failures_metadata(failed)
    )
    seconds = time.perf_counter() - started
    return ShardOutcome(stage, shard_index, len(records), True, seconds, len(outputs), failed)


def rows_by_id(rows: Iterable[Row], records: Sequence[ImageRecord]) -> dict[str, Row]:
    """The rows of ``records``' images by image id; the shard's others are read past, not kept."""
    wanted = {record.image_id for record in records}
    return {row.image_id: row for row in rows if row.image_id in wanted}
