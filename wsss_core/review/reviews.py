"""Reviewers' decisions, kept in the workspace: ``reviews.parquet`` is the record.

The FiftyOne database is where people work; this table is what the pipeline
trusts. It is append-only: each sync adds one row per image whose review state
changed, so the full history stays readable and the latest row per image is
the current state.

``reviews.parquet``:

=========== ================== ==============================================
column      type               meaning
=========== ================== ==============================================
image_id    string             manifest image id
status      string             ``approved``, ``rejected``, ``needs-fix`` or
                               ``unreviewed`` (a tag was removed)
labels      list<int16> (null) corrected image labels; null = no correction
mask_sha256 string (null)      hash of the frozen mask, for ``approved``
reviewed_at timestamp[us, UTC] when the sync saw the change
corrected_  string (null)      the current corrected mask's hash (a reviewer
sha256                         painted it: ``corrected/<image_id>.png``)
corrected_  string (null)      hash of the mask the reviewer started from, as
base_sha256                    sent to the editor
corrected_  string (null)      hash of the pipeline's mask (``masks/``) when it
pipeline_                      was sent: a later run that changes it makes the
sha256                         correction one of an older mask
corrected_  string (null)      who saved the correction (the editor's user)
by
corrected_  timestamp (null)   when they saved it
at
correction_ string (null)      where it came from (editor task, annotation
ref                            and its version)
=========== ================== ==============================================

Every row carries the image's whole state: a tag change keeps the current
correction, a correction keeps the tags' status and label fixes. Tables
written before corrections existed (schema version 1) read with no
correction.

An approval freezes the mask: it is copied to ``approved/<image_id>.png`` and
from then on publishing and export use that copy, whatever later runs compute,
until a reviewer removes the ``approved`` tag.

Appending rewrites the table from what was read, so every update holds its
``store/update_lock`` (and the manifest's, to write label corrections): two
processes recording at once never lose a row, whether or not a flow holds the
workspace lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from wsss_core.data.manifest import (
    STATUS_OK,
    STATUS_UNLABELED,
    read_manifest,
    write_manifest,
)
from wsss_core.store.atomic import write_bytes_atomic
from wsss_core.store.parquet_io import read_table, write_table
from wsss_core.store.update_lock import exclusive_update
from wsss_core.store.workspace import Workspace

REVIEWS_SCHEMA_VERSION = 2  # 2: the corrected_* columns
APPROVED, REJECTED, NEEDS_FIX, UNREVIEWED = "approved", "rejected", "needs-fix", "unreviewed"
REVIEW_TAGS = (APPROVED, REJECTED, NEEDS_FIX)

REVIEWS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("status", pa.string()),
        ("labels", pa.list_(pa.int16())),
        ("mask_sha256", pa.string()),
        ("reviewed_at", pa.timestamp("us", tz="UTC")),
        ("corrected_sha256", pa.string()),
        ("corrected_base_sha256", pa.string()),
        ("corrected_pipeline_sha256", pa.string()),
        ("corrected_by", pa.string()),
        ("corrected_at", pa.timestamp("us", tz="UTC")),
        ("correction_ref", pa.string()),
    ]
)


@dataclass(frozen=True)
class Correction:
    """A mask a reviewer painted, and what it was painted over."""

    sha256: str  # of the corrected mask's PNG
    base_sha256: str  # of the mask sent to the editor
    pipeline_sha256: str  # of masks/<id>.png when sent ("" when there was none)
    by: str
    at: datetime
    ref: str  # the editor's task and annotation version, so a later edit is told apart


@dataclass(frozen=True)
class ReviewEvent:
    image_id: str
    status: str
    labels: tuple[int, ...] | None = None
    mask_sha256: str | None = None
    reviewed_at: datetime | None = None
    correction: Correction | None = None


@dataclass(frozen=True)
class ObservedReview:
    """What a reviewer left on one sample: review tags and the labels as they stand.

    ``published_labels`` are the labels the pipeline last wrote; labels that
    differ from them were edited by a person.
    """

    tags: frozenset[str]
    labels: tuple[int, ...]
    published_labels: tuple[int, ...] | None = None


def status_from_tags(tags: Iterable[str]) -> str:
    """One status per sample; conflicting tags resolve to the most cautious."""
    present = set(tags)
    for status in (REJECTED, NEEDS_FIX, APPROVED):
        if status in present:
            return status
    return UNREVIEWED


def approved_mask_path(workspace: Workspace, image_id: str) -> Path:
    return workspace.root / "approved" / f"{image_id}.png"


def published_mask_path(workspace: Workspace, image_id: str) -> Path:
    return workspace.root / "review" / "published" / f"{image_id}.png"


def publish_mask_copy(workspace: Workspace, image_id: str) -> Path:
    """Copy ``masks/<id>.png`` to the published copy reviewers see (only when it changed)."""
    source, target = workspace.mask_path(image_id), published_mask_path(workspace, image_id)
    if not source.exists():
        return target
    data = source.read_bytes()
    if not target.exists() or target.read_bytes() != data:
        write_bytes_atomic(target, data)
    return target


def reviews_path(workspace: Workspace) -> Path:
    return workspace.root / "reviews.parquet"


def _correction_of(row: Mapping[str, object]) -> Correction | None:
    if row.get("corrected_sha256") is None:
        return None
    return Correction(
        str(row["corrected_sha256"]),
        str(row["corrected_base_sha256"]),
        str(row.get("corrected_pipeline_sha256") or ""),
        str(row["corrected_by"]),
        row["corrected_at"],  # type: ignore[arg-type]
        str(row["correction_ref"]),
    )


def read_reviews(workspace: Workspace) -> list[ReviewEvent]:
    path = reviews_path(workspace)
    if not path.exists():
        return []
    return [
        ReviewEvent(
            row["image_id"],
            row["status"],
            None if row["labels"] is None else tuple(row["labels"]),
            row["mask_sha256"],
            row["reviewed_at"],
            _correction_of(row),
        )
        for row in read_table(path).to_pylist()
    ]


def latest_reviews(workspace: Workspace) -> dict[str, ReviewEvent]:
    """The current review state per image (the last event wins)."""
    latest: dict[str, ReviewEvent] = {}
    for event in read_reviews(workspace):
        latest[event.image_id] = event
    return latest


def _append(workspace: Workspace, events: Sequence[ReviewEvent]) -> None:
    path = reviews_path(workspace)
    with exclusive_update(path):
        rows = [_row_of(e) for e in [*read_reviews(workspace), *events]]
        table = pa.Table.from_pylist(rows, schema=REVIEWS_SCHEMA)
        write_table(path, table, {"schema_version": REVIEWS_SCHEMA_VERSION})


def _row_of(event: ReviewEvent) -> dict[str, object]:
    correction = event.correction
    return {
        "image_id": event.image_id,
        "status": event.status,
        "labels": None if event.labels is None else list(event.labels),
        "mask_sha256": event.mask_sha256,
        "reviewed_at": event.reviewed_at,
        "corrected_sha256": correction.sha256 if correction else None,
        "corrected_base_sha256": correction.base_sha256 if correction else None,
        "corrected_pipeline_sha256": correction.pipeline_sha256 if correction else None,
        "corrected_by": correction.by if correction else None,
        "corrected_at": correction.at if correction else None,
        "correction_ref": correction.ref if correction else None,
    }


def _freeze_mask(workspace: Workspace, image_id: str) -> str | None:
    """Freeze the mask the reviewer was shown (the published copy), not a newer one."""
    source = published_mask_path(workspace, image_id)
    if not source.exists():
        return None
    data = source.read_bytes()
    write_bytes_atomic(approved_mask_path(workspace, image_id), data)
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class SyncSummary:
    changed: int
    approved: int
    rejected: int
    needs_fix: int
    label_corrections: int


def record_reviews(
    workspace: Workspace, observed: Mapping[str, ObservedReview], now: datetime | None = None
) -> SyncSummary:
    """Append the changes between ``observed`` (from the review tool) and the record.

    Newly approved masks are frozen; label corrections (labels that differ from
    the manifest's) are recorded and written into the manifest for the next run.
    The comparison with the record and the append are one update: a second
    process recording the same change at once finds it recorded.
    """
    with exclusive_update(reviews_path(workspace)):
        return _record_reviews(workspace, observed, now or datetime.now(UTC))


def _record_reviews(
    workspace: Workspace, observed: Mapping[str, ObservedReview], now: datetime
) -> SyncSummary:
    manifest = read_manifest(workspace)
    records = manifest.by_id()
    latest = latest_reviews(workspace)
    events: list[ReviewEvent] = []
    for image_id, seen in observed.items():
        if image_id not in records:
            continue
        status = status_from_tags(seen.tags)
        previous = latest.get(image_id, ReviewEvent(image_id, UNREVIEWED))
        shown = tuple(sorted(seen.labels))
        reference = seen.published_labels
        if reference is None:  # published before we kept track: compare with the manifest
            reference = tuple(sorted(records[image_id].labels))
        labels = shown if shown != tuple(sorted(reference)) else previous.labels
        if status == previous.status and labels == previous.labels:
            continue
        mask_hash = previous.mask_sha256 if status == APPROVED else None
        if status == APPROVED and previous.status != APPROVED:
            mask_hash = _freeze_mask(workspace, image_id)
        events.append(ReviewEvent(image_id, status, labels, mask_hash, now, previous.correction))
    if events:
        _append(workspace, events)
        apply_label_corrections(workspace)
    current = {**latest, **{e.image_id: e for e in events}}
    statuses = [e.status for e in current.values()]
    return SyncSummary(
        changed=len(events),
        approved=statuses.count(APPROVED),
        rejected=statuses.count(REJECTED),
        needs_fix=statuses.count(NEEDS_FIX),
        label_corrections=sum(
            e.labels is not None
            and e.labels != latest.get(e.image_id, ReviewEvent(e.image_id, UNREVIEWED)).labels
            for e in events
        ),
    )


def record_corrections(
    workspace: Workspace, corrections: Mapping[str, Correction], now: datetime | None = None
) -> int:
    """Append one row per corrected image (its status and label fixes kept); returns how many.

    One append: every correction of a pull is recorded, or none is.
    """
    with exclusive_update(reviews_path(workspace)):
        latest = latest_reviews(workspace)
        when = now or datetime.now(UTC)
        events = [
            replace(
                latest.get(image_id, ReviewEvent(image_id, UNREVIEWED)),
                reviewed_at=when,
                correction=correction,
            )
            for image_id, correction in corrections.items()
        ]
        if events:
            _append(workspace, events)
        return len(events)


def apply_label_corrections(workspace: Workspace) -> int:
    """Write every current label correction into the manifest; returns how many changed.

    Called after each sync and after each ingest, so a re-ingest that reads the
    source's original labels never undoes a reviewer's correction.
    """
    # The reviews are read inside the manifest's update: an apply that read them
    # earlier cannot write over one that saw a newer correction.
    with exclusive_update(workspace.manifest_path):
        return _apply_label_corrections(workspace)


def _apply_label_corrections(workspace: Workspace) -> int:
    corrections = {
        image_id: event.labels
        for image_id, event in latest_reviews(workspace).items()
        if event.labels is not None
    }
    manifest = read_manifest(workspace)
    changed = 0
    rows = []
    for row in manifest.all_rows:
        labels = corrections.get(row.image_id)
        if labels is None or tuple(row.labels) == labels:
            rows.append(row)
            continue
        status = row.status
        if status in (STATUS_OK, STATUS_UNLABELED):
            status = STATUS_OK if labels else STATUS_UNLABELED
        rows.append(replace(row, labels=labels, status=status))
        changed += 1
    if changed:
        write_manifest(workspace, rows, manifest.class_names, manifest.source)
    return changed
