"""Stage ``ingest``: a dataset source -> ``manifest.parquet`` + ``quarantine.parquet``.

:func:`ingest` is the library's entry point, and what ``wsss ingest``, the
ingest flow and the pipeline's refresh run (``tasks/ingest.py`` only logs):

1. the source adapter of the kind reads its layout into a
   :class:`~wsss_core.data.sources.SourceScan` (``data/*_source.py``, the demo
   generator, ``review/fiftyone_source.py``);
2. every item goes through the same checks (:mod:`wsss_core.data.scan_checks`);
3. the result is merged into the previous manifest (:mod:`wsss_core.data.merge`)
   and both tables are written, then the final masks of changed, removed and
   quarantined images are deleted;
4. reviewers' label fixes (``reviews.parquet``) are written into the manifest
   again: a source read again has its original labels, and must not undo them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from wsss_core.config import DemoConfig, ReviewConfig
from wsss_core.data.manifest import (
    STATUS_UNLABELED,
    Manifest,
    read_manifest,
    write_manifest,
    write_quarantine,
)
from wsss_core.data.merge import merge_rows, remap_labels
from wsss_core.data.scan_checks import check_scan, resolve_class_names
from wsss_core.data.sources import SOURCE_KINDS, IngestOptions, IngestSummary, SourceScan
from wsss_core.review.reviews import apply_label_corrections
from wsss_core.store.update_lock import exclusive_update
from wsss_core.store.workspace import Workspace


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
    pure function of them, so the manifest is replaced, not merged; ``path``
    None: ``<workspace>/demo-source``). ``review``: where FiftyOne's database
    is (kind ``fiftyone``).
    """
    options = _absolute_paths(options or IngestOptions())
    scan = _scan_source(kind, path, workspace, options, demo, review)
    if kind == "demo":
        options = options.model_copy(update={"replace": True})
    # Recorded in the manifest so a scheduled run can read the same source again.
    where = str(path) if kind == "fiftyone" else str(Path(path or scan.root).resolve())
    replay = options.model_dump_json(exclude_defaults=True, exclude={"replace"})
    scan = replace(scan, info={**scan.info, "ingest_path": where, "ingest_options": replay})
    return ingest_scan(scan, workspace, options)


def _scan_source(
    kind: str,
    path: Path | str | None,
    workspace: Workspace,
    options: IngestOptions,
    demo: DemoConfig | None,
    review: ReviewConfig | None,
) -> SourceScan:
    """The adapter of ``kind`` reads its layout (imported here: COCO, FiftyOne cost imports)."""
    if kind == "voc":
        from wsss_core.data.voc_source import scan_voc

        return scan_voc(Path(path), options)
    if kind == "coco":
        from wsss_core.data.coco_source import scan_coco

        return scan_coco(Path(path), options)
    if kind == "folder":
        from wsss_core.data.folder_source import scan_folder_root

        return scan_folder_root(Path(path), options)
    if kind == "fiftyone":
        from wsss_core.review.fiftyone_source import scan_fiftyone

        return scan_fiftyone(str(path), workspace, options, review or ReviewConfig())
    if kind == "demo":
        from wsss_core.data.folder_source import scan_demo

        return scan_demo(Path(path) if path else workspace.root / "demo-source", demo)
    raise ValueError(f"unknown source {kind!r}; expected voc, coco, folder, fiftyone or demo")


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
            f"(kind {kind!r}); ingest it with `wsss ingest` (or stages.ingest_stage.ingest) once"
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
    """Check a scan's items, merge them into the workspace manifest, write both tables.

    Reviewers' label fixes are applied again afterwards, whichever entry point
    came here (see the module docstring).
    """
    options = options or IngestOptions()
    # Read to write under the manifest's lock: a concurrent writer's rows are not lost.
    with exclusive_update(workspace.manifest_path):
        previous = _previous_manifest(workspace, scan, options.replace)
        class_names = resolve_class_names(scan, previous)
        previous_rows = list(previous.all_rows) if previous else []
        if previous and tuple(previous.class_names) != tuple(class_names):
            class_index = {name: index for index, name in enumerate(class_names)}
            previous_rows = [
                remap_labels(r, previous.class_names, class_index) for r in previous_rows
            ]
        checked = check_scan(
            scan,
            class_names,
            {record.image_id: record for record in previous_rows},
            workspace,
            options.max_pixels,
            options.workers,
        )
        quarantine = checked.quarantine
        merged = merge_rows(
            previous_rows, checked.records, {q.image_id for q in quarantine}, scan.covered_splits
        )
        source = {"kind": scan.kind, "root": scan.root, "classes": scan.class_list, **scan.info}
        manifest = write_manifest(workspace, merged.rows, class_names, source)
        write_quarantine(workspace, quarantine)
        # Masks go only after the manifest: the other way round, a kill in between
        # left the old manifest, whose crf shards still look current, so no run
        # would ever write the deleted masks again.
        _remove_outdated_masks(workspace, merged.stale_ids, manifest)
    # After the lock: corrections recorded meanwhile are applied again here.
    kept_fixes = apply_label_corrections(workspace)
    if kept_fixes:
        manifest = read_manifest(workspace)  # the class counts below with the fixed labels

    label_counts = Counter(label for record in manifest.records for label in record.labels)
    counts = merged.counts
    return IngestSummary(
        ingested=len(checked.records),
        quarantined=dict(Counter(item.category for item in quarantine)),
        class_counts={name: label_counts.get(i, 0) for i, name in enumerate(class_names)},
        source=f"{scan.kind} {scan.root}",
        new=counts.new,
        changed=counts.changed,
        relabelled=counts.relabelled,
        unchanged=counts.unchanged,
        restored=counts.restored,
        removed=counts.removed,
        unlabeled=sum(record.status == STATUS_UNLABELED for record in checked.records),
        converted=dict(checked.converted),
        class_list=scan.class_list,
        manifest_rows=len(manifest.all_rows),
        label_fixes_kept=kept_fixes,
    )
