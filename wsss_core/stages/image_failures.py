"""One bad image costs one image: per-image failures of the map stages.

A map stage runs each image of its shard under an :class:`ImageGuard`. An
error that belongs to the image (its file cannot be read or decoded, or the
stage's computation fails on it alone) is recorded as that image's failure:
the rest of the shard completes and is cached, and later stages skip the
image. Errors that are not the image's still fail the whole shard:

* the machine's: out of memory, a full or read-only disk, too many open files;
* the code's: a non-read error on every image tried (at least two), which is
  what a bug hitting every image looks like.

A failure is stored in the shard's own metadata (``failed``: image id ->
reason and the file's stamp), written atomically with the shard's rows, so
parallel shards never share a file and a kill never leaves a failure without
its shard. The next run retries the image only when its settings, its input
(pixels or labels, via the lineage) or its file (size, mtime) changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from wsss_core.data.images import MACHINE_ERRNOS, is_decode_error, load_rgb
from wsss_core.data.manifest import (
    ImageRecord,
    QuarantinedItem,
    read_quarantine,
    write_quarantine,
)
from wsss_core.store.maps import read_failed
from wsss_core.store.workspace import ALL_MAP_STAGES, Workspace

T = TypeVar("T")

# Compute failures on this many images before any image succeeded fail the shard.
BUG_PROBE = 2


class ImageReadError(Exception):
    """An image file that cannot be opened or decoded; the message names the file."""


@dataclass(frozen=True)
class ImageFailure:
    """One image a stage could not compute; later stages skip it."""

    stage: str
    shard_index: int
    image_id: str
    uri: str
    reason: str  # names the file and the problem
    stamp: str  # the file's size and mtime when it failed ("" when it was missing)

    def __str__(self) -> str:
        return f"{self.stage} failed for {self.image_id}: {self.reason}"

    def as_metadata(self) -> dict[str, str]:
        return {"uri": self.uri, "reason": self.reason, "stamp": self.stamp}


def file_stamp(uri: str) -> str:
    """Size and modification time of ``uri``: a changed file gets a new stamp."""
    try:
        stat = os.stat(uri)
    except OSError:
        return ""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def is_machine_error(error: BaseException) -> bool:
    """True for errors of the machine (memory, disk), which no image causes alone."""
    if isinstance(error, MemoryError):
        return True
    if isinstance(error, OSError) and error.errno in MACHINE_ERRNOS:
        return True
    # torch.OutOfMemoryError (CUDA, MPS) is a RuntimeError naming it.
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def read_image(record: ImageRecord) -> np.ndarray:
    """The image's pixels; a file that cannot be read raises :class:`ImageReadError`."""
    try:
        return load_rgb(record.uri)
    except Exception as error:
        if not is_decode_error(error):
            raise
        raise ImageReadError(f"{record.uri}: {type(error).__name__}: {error}") from error


class ImageGuard:
    """Runs a stage's per-image work and tells the image's errors from the shard's."""

    def __init__(self, stage: str, shard_index: int) -> None:
        self.stage = stage
        self.shard_index = shard_index
        self.failures: list[ImageFailure] = []
        self._done = 0
        self._compute_failures = 0  # failures other than unreadable files

    def run(self, record: ImageRecord, work: Callable[..., T], *args: object) -> T | None:
        """``work(*args)``, or None once the image's failure is recorded.

        Raises the errors that are the shard's (see the module's docstring).
        """
        try:
            result = work(*args)
        except Exception as error:
            self._record(record, error)
            return None
        self._done += 1
        return result

    def _record(self, record: ImageRecord, error: Exception) -> None:
        if is_machine_error(error):
            raise self._noted(error, record)
        if isinstance(error, ImageReadError):
            reason = str(error)
        else:
            self._compute_failures += 1
            if self._done == 0 and self._compute_failures >= BUG_PROBE:
                raise self._noted(error, record)  # every image tried fails: the code's error
            reason = f"{record.uri}: {type(error).__name__}: {error}"
        self.failures.append(
            ImageFailure(
                self.stage,
                self.shard_index,
                record.image_id,
                record.uri,
                reason,
                file_stamp(record.uri),
            )
        )

    def _noted(self, error: Exception, record: ImageRecord) -> Exception:
        """``error``, noting the image it met (the shard's failure message shows notes)."""
        error.add_note(f"while the {self.stage} stage computed {record.image_id} ({record.uri})")
        return error


def known_failures(
    stage: str,
    shard_index: int,
    stored: dict[str, dict[str, str]],
    records: Sequence[ImageRecord],
    reusable: set[str],
) -> list[ImageFailure]:
    """The previous run's failures that still hold: same settings and input, same file.

    ``stored``: the shard's ``failed`` metadata; ``reusable``: the images whose
    stored input hash matches under the current settings (as for rows).
    """
    kept = []
    for record in records:
        entry = stored.get(record.image_id)
        if entry is None or record.image_id not in reusable:
            continue
        if entry.get("stamp", "") == file_stamp(record.uri):
            kept.append(
                ImageFailure(
                    stage, shard_index, record.image_id, record.uri, entry["reason"], entry["stamp"]
                )
            )
    return kept


def failures_metadata(failures: Sequence[ImageFailure]) -> dict[str, dict[str, str]]:
    return {failure.image_id: failure.as_metadata() for failure in failures}


def stored_failures(stage: str, shard_index: int, path: Path) -> list[ImageFailure]:
    """The failures a shard file records (none for a missing or older file)."""
    return [
        ImageFailure(stage, shard_index, image_id, e["uri"], e["reason"], e.get("stamp", ""))
        for image_id, e in read_failed(path).items()
    ]


def quarantine_category(stage: str) -> str:
    return f"{stage} failed"


def record_in_quarantine(workspace: Workspace, failures: Sequence[ImageFailure]) -> None:
    """List the current stage failures in ``quarantine.parquet`` beside ingest's rejections.

    The previous run's stage rows are replaced; ingest's rows are kept as they are.
    """
    stage_categories = {quarantine_category(stage) for stage in ALL_MAP_STAGES}
    existing = list(read_quarantine(workspace))
    kept = [item for item in existing if item.category not in stage_categories]
    rows = [
        QuarantinedItem(f.image_id, f.uri, f"{quarantine_category(f.stage)}: {f.reason}")
        for f in failures
    ]
    if [*kept, *rows] != existing:
        write_quarantine(workspace, [*kept, *rows])


def failed_image_lines(failures: Sequence[ImageFailure], limit: int) -> list[str]:
    """What status and the CLI say of failed images: a count, then one line each."""
    if not failures:
        return []
    lines = [f"failed images: {len(failures)} (skipped by the later stages; quarantine.parquet)"]
    lines += [f"  {failure}" for failure in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"  ... and {len(failures) - limit} more")
    return lines


def failed_image_ids(workspace: Workspace, stages: Sequence[str], shard_index: int) -> set[str]:
    """The images of a shard that any of ``stages`` recorded as failed."""
    return {
        image_id
        for stage in stages
        for image_id in read_failed(workspace.shard_path(stage, shard_index))
    }
