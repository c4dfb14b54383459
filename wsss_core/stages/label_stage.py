"""The shared loop of the stages that turn maps into label maps (seeds, grown, crf)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tqdm import tqdm

from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import ImageRecord
from wsss_core.stages.common import (
    ShardOutcome,
    current_model_hash,
    expected_lineage,
    is_fresh,
    plan_rewrite,
    shard_records,
)
from wsss_core.store.maps import (
    CamRecord,
    LabelRecord,
    read_cam_shard,
    read_label_shard,
    write_label_shard,
)
from wsss_core.store.workspace import Workspace

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
) -> ShardOutcome:
    """Apply ``per_image`` to every image of a shard and write ``maps/<stage>/part-<shard>``.

    Skips the work when the existing output's lineage (config of this stage and
    those above it, model, shard inputs) is unchanged. ``model_hash``: the
    checkpoint's hash when the caller already has it (else it is read here).
    """
    started = time.perf_counter()
    _, records = shard_records(workspace, config, shard_index)
    model = model_hash or current_model_hash(workspace)
    lineage = expected_lineage(config, stage, model, records)
    path = workspace.shard_path(stage, shard_index)
    if is_fresh(path, lineage):
        return ShardOutcome(stage, shard_index, len(records), computed=False)
    plan = plan_rewrite(path, lineage, records)
    todo = plan.todo
    cams = _by_id(read_cam_shard(workspace.shard_path("cam", shard_index)), todo, "cam")
    previous = (
        _by_id(read_label_shard(workspace.shard_path(upstream, shard_index)), todo, upstream)
        if upstream
        else {}
    )
    bar = tqdm(todo, desc=f"{stage} {shard_index}", unit="img", disable=not show_progress)
    outputs = [
        per_image(record, cams[record.image_id], previous.get(record.image_id)) for record in bar
    ]
    write_label_shard(path, stage, outputs, lineage, plan.inputs, plan.reused)
    seconds = time.perf_counter() - started
    return ShardOutcome(stage, shard_index, len(records), True, seconds, len(todo))


def _by_id(rows, records: Sequence[ImageRecord], stage: str) -> dict:
    wanted = {record.image_id for record in records}
    table = {row.image_id: row for row in rows if row.image_id in wanted}
    missing = [r.image_id for r in records if r.image_id not in table]
    if missing:
        raise ValueError(
            f"stage {stage!r} output lacks {len(missing)} image(s) of this shard "
            f"(e.g. {missing[0]}); re-run that stage"
        )
    return table
