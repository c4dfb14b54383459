"""A folder of images plus a CSV of image-level labels, the simplest source.

CSV columns: ``image_id`` (file stem in the images folder, or a file name),
``labels`` (class names joined by ``separator``), optional ``split``.
Optional ``classes.txt`` (one name a line) fixes the class order; without it
the sorted names found in the CSV are used. Optional ``masks/<image_id>.png``
ground truth. The demo dataset uses exactly this layout.

Each bad item is quarantined with its reason; the rest are ingested.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from wsss_core.data.manifest import (
    ImageRecord,
    QuarantinedItem,
    file_sha256,
    write_manifest,
    write_quarantine,
)
from wsss_core.store.workspace import Workspace

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class IngestSummary:
    ingested: int
    quarantined: dict[str, int]
    class_counts: dict[str, int]

    def lines(self) -> list[str]:
        lines = [f"images ok: {self.ingested}"]
        total_bad = sum(self.quarantined.values())
        lines.append(f"quarantined: {total_bad}")
        lines += [f"  {reason}: {count}" for reason, count in sorted(self.quarantined.items())]
        lines.append("classes: " + ", ".join(f"{n}={c}" for n, c in self.class_counts.items()))
        return lines


def _find_image(images_dir: Path, image_id: str) -> Path | None:
    direct = images_dir / image_id
    if direct.suffix.lower() in IMAGE_EXTENSIONS and direct.is_file():
        return direct
    for extension in IMAGE_EXTENSIONS:
        candidate = images_dir / f"{image_id}{extension}"
        if candidate.is_file():
            return candidate
    return None


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation; raises ValueError for unreadable files."""
    try:
        with Image.open(path) as image:
            image.load()
            orientation = image.getexif().get(0x0112, 1)
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot decode ({error})") from error
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _read_rows(labels_csv: Path) -> list[dict[str, str]]:
    with open(labels_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image_id", "labels"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{labels_csv}: missing column(s) {sorted(missing)}")
        return list(reader)


def _class_names(
    rows: Sequence[dict[str, str]], classes_file: Path | None, separator: str
) -> list[str]:
    if classes_file is not None:
        names = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
        if len(set(names)) != len(names):
            raise ValueError(f"{classes_file}: duplicate class names")
        return names
    found = {name.strip() for row in rows for name in (row["labels"] or "").split(separator)}
    return sorted(name for name in found if name)


def ingest_folder(
    images_dir: Path,
    labels_csv: Path,
    workspace: Workspace,
    classes_file: Path | None = None,
    masks_dir: Path | None = None,
    separator: str = ";",
    default_split: str = "train",
    source_kind: str = "folder",
) -> IngestSummary:
    """Validate every listed image and write ``manifest.parquet`` and ``quarantine.parquet``."""
    images_dir, labels_csv = Path(images_dir).resolve(), Path(labels_csv).resolve()
    rows = _read_rows(labels_csv)
    class_names = _class_names(rows, classes_file, separator)
    class_index = {name: index for index, name in enumerate(class_names)}
    records: list[ImageRecord] = []
    quarantine: list[QuarantinedItem] = []
    seen: set[str] = set()

    for line_number, row in enumerate(rows, start=2):
        image_id = (row.get("image_id") or "").strip()
        raw_id = (
            Path(image_id).stem if Path(image_id).suffix.lower() in IMAGE_EXTENSIONS else image_id
        )

        def reject(category: str, detail: str, uri: str = "", _id: str = raw_id) -> None:
            quarantine.append(QuarantinedItem(_id, uri, f"{category}: {detail}"))

        if not raw_id:
            reject("empty id", f"{labels_csv}:{line_number}", _id=f"<line {line_number}>")
            continue
        if raw_id in seen:
            reject("duplicate id", f"{labels_csv}:{line_number} repeats {raw_id!r}")
            continue
        seen.add(raw_id)
        path = _find_image(images_dir, image_id)
        if path is None:
            reject("missing file", f"no image named {image_id!r} in {images_dir}")
            continue
        names = [n.strip() for n in (row["labels"] or "").split(separator) if n.strip()]
        unknown = [n for n in names if n not in class_index]
        if unknown:
            reject("unknown class", f"{labels_csv}:{line_number} names {unknown}", str(path))
            continue
        try:
            width, height = _image_size(path)
        except ValueError as error:
            reject("unreadable image", f"{path}: {error}", str(path))
            continue
        gt_uri = None
        if masks_dir is not None and (masks_dir / f"{raw_id}.png").is_file():
            gt_path = (masks_dir / f"{raw_id}.png").resolve()
            try:
                gt_size = _image_size(gt_path)
            except ValueError as error:
                reject("unreadable ground truth", f"{gt_path}: {error}", str(path))
                continue
            if gt_size != (width, height):
                detail = f"{gt_path} is {gt_size}, image is {(width, height)}"
                reject("ground truth size mismatch", detail, str(path))
                continue
            gt_uri = str(gt_path)
        records.append(
            ImageRecord(
                image_id=raw_id,
                uri=str(path),
                width=width,
                height=height,
                labels=tuple(sorted({class_index[n] for n in names})),
                split=(row.get("split") or default_split).strip() or default_split,
                sha256=file_sha256(path),
                gt_uri=gt_uri,
            )
        )

    source = {"kind": source_kind, "root": str(images_dir.parent), "labels": str(labels_csv)}
    write_manifest(workspace, records, class_names, source)
    write_quarantine(workspace, quarantine)
    counts = Counter(label for record in records for label in record.labels)
    reasons = Counter(item.reason.split(":", 1)[0] for item in quarantine)
    return IngestSummary(
        ingested=len(records),
        quarantined=dict(reasons),
        class_counts={name: counts.get(i, 0) for i, name in enumerate(class_names)},
    )
