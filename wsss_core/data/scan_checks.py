"""The checks every source's items go through, whatever the layout they came from.

Two passes over a :class:`~wsss_core.data.sources.SourceScan`: first the
checks that open no file (ids, duplicates, parse problems, class names), then
the file checks of each planned item on threads (missing or empty files,
sha256, size, full decode, ground truth). One bad item never stops the rest:
it becomes a :class:`~wsss_core.data.manifest.QuarantinedItem` with its reason
(see :mod:`wsss_core.data.validation`). Merging and writing the tables is the
ingest stage's (:mod:`wsss_core.stages.ingest_stage`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from wsss_core.data.manifest import (
    STATUS_OK,
    STATUS_UNLABELED,
    ImageRecord,
    Manifest,
    QuarantinedItem,
    file_sha256,
)
from wsss_core.data.sources import SourceItem, SourceScan
from wsss_core.data.validation import (
    DUPLICATE_ID,
    MALFORMED_ANNOTATION,
    MAX_CLASSES,
    UNKNOWN_CLASS,
    Rejected,
    check_ground_truth,
    check_image_id,
    file_checks,
    inspect_image,
)
from wsss_core.store.workspace import Workspace

# The mode load_rgb needs no conversion for; any other is counted in the summary.
_NATIVE_MODE = "RGB"


@dataclass
class CheckedScan:
    """What passed (one record per usable item), what did not, and the modes converted."""

    records: list[ImageRecord]
    quarantine: list[QuarantinedItem]
    converted: Counter[str] = field(default_factory=Counter)


def resolve_class_names(scan: SourceScan, previous: Manifest | None) -> list[str]:
    """The source's fixed list; else the previous list plus new names found (sorted).

    Keeping the previous order when names are discovered means a re-ingest that
    finds a new class appends it instead of renumbering every class id.
    """
    if scan.class_names is not None:
        names = list(scan.class_names)
    else:
        found = sorted({name for item in scan.items for name in item.label_names})
        names = list(previous.class_names) if previous else []
        names += [name for name in found if name not in set(names)]
    if len(set(names)) != len(names):
        raise ValueError(f"{scan.kind} source: duplicate class names in {names}")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{len(names)} classes; label maps hold at most {MAX_CLASSES}")
    return names


def _plan(
    items: Sequence[SourceItem], class_index: dict[str, int], quarantine: list[QuarantinedItem]
) -> list[tuple[SourceItem, tuple[int, ...]]]:
    """Checks that need no file: ids, duplicates, parse problems, class names."""
    planned = []
    seen: set[str] = set()
    for item in items:
        uri = str(item.image_path) if item.image_path else ""
        try:
            check_image_id(item.image_id, item.origin)
            if item.image_id in seen:
                raise Rejected(DUPLICATE_ID, f"{item.origin} repeats {item.image_id!r}")
            seen.add(item.image_id)
            if item.problem is not None:
                raise Rejected(*item.problem)
            unknown = sorted({n for n in item.label_names if n not in class_index})
            if unknown:
                raise Rejected(UNKNOWN_CLASS, f"{item.origin} names {unknown}")
        except Rejected as rejected:
            quarantine.append(QuarantinedItem(item.image_id or item.origin, uri, rejected.reason))
            continue
        labels = tuple(sorted({class_index[name] for name in item.label_names}))
        planned.append((item, labels))
    return planned


def _check_item(
    item: SourceItem,
    labels: tuple[int, ...],
    previous: ImageRecord | None,
    workspace: Workspace,
    class_names: tuple[str, ...],
    max_pixels: int,
) -> tuple[ImageRecord, str]:
    """The file checks of one item: (record, image mode); raises Rejected."""
    file_checks(item.image_path, item.origin)
    path = item.image_path
    sha = file_sha256(path)
    # Pixels that already passed a full decode need only their header read again.
    known = previous is not None and previous.usable and previous.sha256 == sha
    info = inspect_image(path, max_pixels, decode=not known, sha256=sha)
    gt_uri = None
    if item.gt_path is not None or item.gt_render is not None:
        try:
            array = item.gt_render(class_names) if item.gt_render is not None else None
        except (ValueError, TypeError, KeyError, IndexError) as error:
            # A source's renderer failing on its annotation is this item's problem.
            raise Rejected(MALFORMED_ANNOTATION, f"{item.origin}: {error}") from error
        gt_uri = check_ground_truth(
            info,
            len(class_names),
            workspace.ground_truth_path(item.image_id),
            gt_path=item.gt_path,
            gt_array=array,
        )
    record = ImageRecord(
        image_id=item.image_id,
        uri=str(path),
        width=info.width,
        height=info.height,
        labels=labels,
        split=item.split,
        sha256=sha,
        gt_uri=gt_uri,
        status=STATUS_OK if labels else STATUS_UNLABELED,
    )
    return record, info.mode


def check_scan(
    scan: SourceScan,
    class_names: Sequence[str],
    previous_by_id: Mapping[str, ImageRecord],
    workspace: Workspace,
    max_pixels: int,
    workers: int,
) -> CheckedScan:
    """Every item of ``scan`` through both passes; file checks on ``workers`` threads.

    ``previous_by_id``: the previous manifest's rows (labels in ``class_names``'
    ids), so an image whose bytes are unchanged is not decoded again.
    Ground truth that has to be written goes to ``ground_truth/<image_id>.png``.
    """
    class_index = {name: index for index, name in enumerate(class_names)}
    quarantine: list[QuarantinedItem] = list(scan.rejected)
    planned = _plan(scan.items, class_index, quarantine)

    def check(entry: tuple[SourceItem, tuple[int, ...]]):
        item, labels = entry
        try:
            return _check_item(
                item,
                labels,
                previous_by_id.get(item.image_id),
                workspace,
                tuple(class_names),
                max_pixels,
            )
        except Rejected as rejected:
            uri = str(item.image_path) if item.image_path else ""
            return QuarantinedItem(item.image_id, uri, rejected.reason)

    checked = CheckedScan(records=[], quarantine=quarantine)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(check, planned):
            if isinstance(result, QuarantinedItem):
                quarantine.append(result)
            else:
                checked.records.append(result[0])
                if result[1] != _NATIVE_MODE:
                    checked.converted[result[1]] += 1
    return checked
