"""Tests' shortcut: a folder's images and labels file ingested without the folder layout.

``wsss ingest folder`` (``stages.ingest_stage.ingest("folder", ROOT, ...)``)
wants ``ROOT/images`` and ``ROOT/labels.csv``; tests point at each part
and choose the source kind, so a test's data can live anywhere.
"""

from __future__ import annotations

from pathlib import Path

from wsss_core.data.folder_source import scan_folder
from wsss_core.data.sources import IngestOptions, IngestSummary
from wsss_core.stages.ingest_stage import ingest_scan
from wsss_core.store.workspace import Workspace


def ingest_folder(
    images_dir: Path,
    labels_csv: Path,
    workspace: Workspace,
    classes_file: Path | None = None,
    masks_dir: Path | None = None,
    separator: str = ";",
    default_split: str = "train",
    source_kind: str = "folder",
    options: IngestOptions | None = None,
) -> IngestSummary:
    """Validate every listed image and write ``manifest.parquet`` and ``quarantine.parquet``.

    An existing manifest of the same source is updated incrementally;
    ``options.replace`` starts a new one.
    """
    scan = scan_folder(
        images_dir, labels_csv, classes_file, masks_dir, separator, default_split, source_kind
    )
    return ingest_scan(scan, workspace, options)
