"""Incremental ingest: merge a fresh scan into the previous manifest without moving rows.

Rules (so map shards, fixed-size chunks of row positions, keep their images):

* a previous row keeps its position; its content is replaced by the new scan's
  record for the same id (``changed`` when the sha256 differs, ``relabelled``
  when only labels, split or ground truth differ, ``unchanged`` otherwise);
* a previous row the scan does not list is kept with status ``removed`` (only
  when the scan covers that row's split), one the scan quarantined is kept
  with status ``quarantined``;
* ids the previous manifest lacks are appended at the end, in scan order.

A changed image changes its shard's ``source_hash`` (id, sha256, labels), so
every map stage recomputes that shard and only that shard.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from wsss_core.data.manifest import (
    STATUS_QUARANTINED,
    STATUS_REMOVED,
    ImageRecord,
)


@dataclass
class MergeCounts:
    new: int = 0
    changed: int = 0
    relabelled: int = 0
    unchanged: int = 0
    restored: int = 0
    removed: int = 0  # usable before, not listed now
    quarantined: int = 0  # usable before, listed but rejected now


@dataclass(frozen=True)
class MergeResult:
    rows: list[ImageRecord]
    counts: MergeCounts
    stale_ids: frozenset[str]  # images whose derived artefacts are out of date


def remap_labels(
    record: ImageRecord, old_names: Sequence[str], new_index: dict[str, int]
) -> ImageRecord:
    """``record`` with its class ids translated from ``old_names`` to ``new_index``."""
    labels = sorted({new_index[old_names[i]] for i in record.labels if old_names[i] in new_index})
    return replace(record, labels=tuple(labels))


def merge_rows(
    previous: Sequence[ImageRecord],
    current: Sequence[ImageRecord],
    rejected_ids: Collection[str],
    covered_splits: Collection[str] | None = None,
) -> MergeResult:
    """Merge ``current`` (this scan's usable records) into ``previous`` rows; see module doc."""
    current_by_id = {record.image_id: record for record in current}
    counts = MergeCounts()
    stale: set[str] = set()
    rows: list[ImageRecord] = []
    rejected = set(rejected_ids)
    for old in previous:
        new = current_by_id.pop(old.image_id, None)
        if new is None:
            if old.image_id in rejected:
                status = STATUS_QUARANTINED
            elif covered_splits is None or old.split in covered_splits:
                status = STATUS_REMOVED
            else:
                rows.append(old)  # another split's row: this scan says nothing about it
                continue
            if old.usable:
                stale.add(old.image_id)
                if status == STATUS_REMOVED:
                    counts.removed += 1
                else:
                    counts.quarantined += 1
            rows.append(replace(old, status=status))
            continue
        if new.sha256 != old.sha256:
            counts.changed += 1
            stale.add(new.image_id)
        elif not old.usable:
            counts.restored += 1
        elif (new.labels, new.split, new.gt_uri, new.status) != (
            old.labels,
            old.split,
            old.gt_uri,
            old.status,
        ):
            counts.relabelled += 1
        else:
            counts.unchanged += 1
        rows.append(new)
    for record in current:
        if record.image_id in current_by_id:  # not matched above: a new image
            counts.new += 1
            rows.append(record)
    return MergeResult(rows, counts, frozenset(stale))
