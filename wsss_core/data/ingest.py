"""The shared half of every ingest: check each listed image, merge, write manifest + quarantine.

:func:`ingest` dispatches on the source kind; :func:`ingest_scan` takes any
adapter's :class:`~wsss_core.data.sources.SourceScan`. One bad item never
stops the run: it goes to ``quarantine.parquet`` with its reason (see
:mod:`wsss_core.data.validation`) and the rest is ingested.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from wsss_core.config import DemoConfig, ReviewConfig
from wsss_core.data.manifest import (
    STATUS_OK,
    STATUS_UNLABELED,
    ImageRecord,
    Manifest,
    QuarantinedItem,
    file_sha256,
    read_manifest,
    write_manifest,
    write_quarantine,
)
from wsss_core.data.merge import merge_rows, remap_labels
from wsss_core.data.sources import (
    SOURCE_KINDS,
    IngestOptions,
    IngestSummary,
    SourceItem,
    SourceScan,
)
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

# Modes that load_rgb converts (everything but plain 8-bit RGB), for the summary.
_NATIVE_MODE = "RGB"


def ingest(
    kind: str,
    path: Path | str | None,
    workspace: Workspace,
    options: IngestOptions | None = None,
    demo: DemoConfig | None = None,
    review: ReviewConfig | None = None,
) -> IngestSummary:
    """Ingest a source of ``kind`` (voc, coco, folder, fiftyone, demo) at ``path``.

    ``demo``: the generator's settings (kind ``demo``; the generated data is a
    pure function of them, so the manifest is replaced, not merged). ``review``:
    where FiftyOne's database is (kind ``fiftyone``).
    """
    options = _absolute_paths(options or IngestOptions())
    if kind == "voc":
        from wsss_core.data.voc_source import scan_voc

        scan = scan_voc(Path(path), options)
    elif kind == "coco":
        from wsss_core.data.coco_source import scan_coco

        scan = scan_coco(Path(path), options)
    elif kind == "folder":
        from wsss_core.data.folder_source import scan_folder_root

        scan = scan_folder_root(Path(path), options)
    elif kind == "fiftyone":
        from wsss_core.review.fiftyone_source import scan_fiftyone

        scan = scan_fiftyone(str(path), workspace, options, review or ReviewConfig())
    elif kind == "demo":
        from wsss_core.data.folder_source import scan_demo

        scan = scan_demo(Path(path) if path else workspace.root / "demo-source", demo)
        options = options.model_copy(update={"replace": True})
    else:
        raise ValueError(f"unknown source {kind!r}; expected voc, coco, folder, fiftyone or demo")
    # Recorded in the manifest so a scheduled run can read the same source again.
    where = str(path) if kind == "fiftyone" else str(Path(path or scan.root).resolve())
    replay = options.model_dump_json(exclude_defaults=True, exclude={"replace"})
    scan = replace(scan, info={**scan.info, "ingest_path": where, "ingest_options": replay})
    return ingest_scan(scan, workspace, options)


def _absolute_paths(options: IngestOptions) -> IngestOptions:
    """Path options made absolute, so a later refresh from another directory reads the same."""
    paths = {
        name: str(Path(value).resolve())
        for name in ("images", "labels", "masks", "classes")
        if (value := getattr(options, name)) and not (name == "classes" and value == "voc")
    }
    return options.model_copy(update=paths)


def reingest(
    workspace: Workspace, demo: DemoConfig | None = None, review: ReviewConfig | None = None
) -> IngestSummary:
    """Read the workspace's source again with the options of its last ingest.

    New images are appended (existing shards keep theirs), changed ones are
    re-validated, vanished ones marked removed: what a scheduled run does first.
    """
    manifest = read_manifest(workspace)
    kind, path = manifest.source.get("kind"), manifest.source.get("ingest_path")
    if kind not in SOURCE_KINDS or not path:
        raise ValueError(
            f"{workspace.manifest_path}: no recorded source to read again "
            f"(kind {kind!r}); ingest it with `wsss ingest` (or data.ingest.ingest) once"
        )
    options = IngestOptions.model_validate_json(manifest.source.get("ingest_options") or "{}")
    return ingest(kind, path, workspace, options, demo=demo, review=review)


def _previous_manifest(workspace: Workspace, scan: SourceScan, replace: bool) -> Manifest | None:
    if replace or not workspace.manifest_path.exists():
        return None
    previous = read_manifest(workspace)
    kind = previous.source.get("kind")
    if kind and kind != scan.kind:
        raise ValueError(
            f"{workspace.manifest_path} was ingested from a {kind!r} source, not {scan.kind!r}; "
            "use another workspace, or --replace to start a new manifest"
        )
    return previous


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


def _remove_outdated_masks(
    workspace: Workspace, stale_ids: Collection[str], manifest: Manifest
) -> None:
    """Delete the final masks of changed, removed and quarantined images.

    A kill before this leaves no lasting harm: a changed image's input hash
    differs from its crf row's, so the crf stage computes its mask again, and
    the masks of rows no longer usable (which no stage rewrites) are swept on
    every ingest, not only the one that found them gone.
    """
    unusable = {record.image_id for record in manifest.all_rows if not record.usable}
    for image_id in set(stale_ids) | unusable:
        workspace.mask_path(image_id).unlink(missing_ok=True)


def ingest_scan(
    scan: SourceScan, workspace: Workspace, options: IngestOptions | None = None
) -> IngestSummary:
    """Validate a scan's items, merge them into the workspace manifest, write both tables."""
    options = options or IngestOptions()
    previous = _previous_manifest(workspace, scan, options.replace)
    class_names = resolve_class_names(scan, previous)
    class_index = {name: index for index, name in enumerate(class_names)}
    quarantine: list[QuarantinedItem] = list(scan.rejected)
    planned = _plan(scan.items, class_index, quarantine)
    previous_rows = list(previous.all_rows) if previous else []
    if previous and tuple(previous.class_names) != tuple(class_names):
        previous_rows = [remap_labels(r, previous.class_names, class_index) for r in previous_rows]
    previous_by_id = {record.image_id: record for record in previous_rows}

    def check(entry: tuple[SourceItem, tuple[int, ...]]):
        item, labels = entry
        try:
            return _check_item(
                item,
                labels,
                previous_by_id.get(item.image_id),
                workspace,
                tuple(class_names),
                options.max_pixels,
            )
        except Rejected as rejected:
            uri = str(item.image_path) if item.image_path else ""
            return QuarantinedItem(item.image_id, uri, rejected.reason)

    records: list[ImageRecord] = []
    modes: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        for result in pool.map(check, planned):
            if isinstance(result, QuarantinedItem):
                quarantine.append(result)
            else:
                records.append(result[0])
                if result[1] != _NATIVE_MODE:
                    modes[result[1]] += 1

    merged = merge_rows(
        previous_rows, records, {q.image_id for q in quarantine}, scan.covered_splits
    )
    source = {"kind": scan.kind, "root": scan.root, "classes": scan.class_list, **scan.info}
    manifest = write_manifest(workspace, merged.rows, class_names, source)
    write_quarantine(workspace, quarantine)
    # Masks go only after the manifest: the other way round, a kill in between
    # left the old manifest, whose crf shards still look current, so no run
    # would ever write the deleted masks again.
    _remove_outdated_masks(workspace, merged.stale_ids, manifest)

    label_counts = Counter(label for record in manifest.records for label in record.labels)
    counts = merged.counts
    return IngestSummary(
        ingested=len(records),
        quarantined=dict(Counter(item.category for item in quarantine)),
        class_counts={name: label_counts.get(i, 0) for i, name in enumerate(class_names)},
        source=f"{scan.kind} {scan.root}",
        new=counts.new,
        changed=counts.changed,
        relabelled=counts.relabelled,
        unchanged=counts.unchanged,
        restored=counts.restored,
        removed=counts.removed,
        unlabeled=sum(record.status == STATUS_UNLABELED for record in records),
        converted=dict(modes),
        class_list=scan.class_list,
        manifest_rows=len(manifest.all_rows),
    )
