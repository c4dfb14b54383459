"""What every source adapter produces, the options of an ingest, and its summary.

An adapter (``voc_source``, ``coco_source``, ``folder_source``,
``review.fiftyone_source``, the demo) only *reads its layout*: it turns the
dataset into a :class:`SourceScan`, one :class:`SourceItem` per listed image
(id, image path, label names, split, optional ground truth) plus the rows it
could not parse. Everything else is shared: the checks and the class list
(:mod:`wsss_core.data.scan_checks`), then the incremental merge, quarantine
and manifest (:mod:`wsss_core.stages.ingest_stage`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wsss_core.data.manifest import QuarantinedItem

SOURCE_KINDS = ("voc", "coco", "folder", "fiftyone", "demo")

# PASCAL VOC's 20 object classes, in the order of its label values 1..20.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

# Pillow's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS): ~0.27 GB as RGB.
DEFAULT_MAX_PIXELS = 89_478_485


class IngestOptions(BaseModel):
    """Everything ``wsss ingest`` can be told; each source reads the fields it knows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: str | None = Field(
        None,
        description="VOC: comma-separated ImageSets to read (default: all but trainval); "
        "COCO: split name written to the manifest (default from the file name); "
        "folder / FiftyOne: split of images the source gives none",
    )
    classes: str | None = Field(
        None,
        description="'voc' (the 20 VOC classes) or a classes file (one name a line); "
        "default: the source's own list, else the sorted names found",
    )
    separator: str = Field(";", min_length=1, description="folder: label separator")
    include_difficult: bool = Field(True, description="VOC: objects marked difficult count")
    images: str | None = Field(None, description="folder / COCO: images folder")
    labels: str | None = Field(
        None, description="folder: labels CSV or JSONL; COCO: the instances JSON"
    )
    masks: str | None = Field(None, description="folder: ground-truth masks folder")
    rasterize_masks: bool = Field(False, description="COCO: ground truth from the instances")
    labels_field: str = Field("ground_truth", description="FiftyOne: Classifications field")
    gt_field: str | None = Field(None, description="FiftyOne: Segmentation field")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="larger images: quarantined")
    replace: bool = Field(False, description="start a new manifest instead of merging")
    workers: int = Field(2, ge=1, description="threads decoding and hashing images")


@dataclass(frozen=True)
class SourceItem:
    """One image as a source lists it, before any file is opened.

    ``gt_render(class_names)`` builds a label map on the image's stored pixel
    grid (COCO polygons, FiftyOne masks) for the workspace's final class list;
    ``problem`` is a (category, detail) pair found
    while parsing, and quarantines the item as is.
    """

    image_id: str
    image_path: Path | None
    label_names: tuple[str, ...]
    split: str
    origin: str
    gt_path: Path | None = None
    gt_render: Callable[[tuple[str, ...]], np.ndarray] | None = None
    problem: tuple[str, str] | None = None


@dataclass
class SourceScan:
    """A source read into items; see the module docstring."""

    kind: str
    root: str
    items: list[SourceItem]
    class_names: tuple[str, ...] | None = None  # fixed order, or None: the names found
    class_list: str = "found"  # how the class list was chosen, stated in the manifest
    info: dict[str, str] = field(default_factory=dict)
    rejected: list[QuarantinedItem] = field(default_factory=list)
    # Splits this scan covers: a manifest row of a covered split that the scan
    # does not list is marked removed. None: the scan covers the whole dataset.
    covered_splits: frozenset[str] | None = None


@dataclass(frozen=True)
class IngestSummary:
    ingested: int  # usable images now listed by the source (ok + unlabeled)
    quarantined: dict[str, int]  # reason category -> count
    class_counts: dict[str, int]  # class name -> usable images that carry it
    source: str = ""
    new: int = 0
    changed: int = 0  # same id, different pixels (sha256): its shard is recomputed
    relabelled: int = 0  # same pixels, different labels / split / ground truth
    unchanged: int = 0
    restored: int = 0  # back after being removed or quarantined
    removed: int = 0  # usable before, now gone from the source (status 'removed')
    unlabeled: int = 0
    converted: dict[str, int] = field(default_factory=dict)  # image mode -> count
    class_list: str = ""
    manifest_rows: int = 0
    label_fixes_kept: int = 0  # images whose reviewer-fixed labels replaced the source's

    def lines(self) -> list[str]:
        lines = []
        if self.source:
            lines.append(f"source: {self.source}")
        lines.append(
            f"images ok: {self.ingested} (new {self.new}, changed {self.changed}, "
            f"relabelled {self.relabelled}, unchanged {self.unchanged}, restored {self.restored})"
        )
        if self.unlabeled:
            lines.append(
                f"  unlabeled (kept for inference, excluded from training): {self.unlabeled}"
            )
        if self.converted:
            modes = ", ".join(f"{mode}={count}" for mode, count in sorted(self.converted.items()))
            lines.append(f"  converted to RGB on read: {modes}")
        if self.removed:
            lines.append(f"removed from the source: {self.removed} (kept, status 'removed')")
        total_bad = sum(self.quarantined.values())
        lines.append(f"quarantined: {total_bad}")
        lines += [f"  {reason}: {count}" for reason, count in sorted(self.quarantined.items())]
        header = f"classes ({len(self.class_counts)}"
        header += f", {self.class_list})" if self.class_list else ")"
        lines.append(f"{header}: " + ", ".join(f"{n}={c}" for n, c in self.class_counts.items()))
        if self.label_fixes_kept:
            lines.append(f"{self.label_fixes_kept} image(s) keep their reviewer-corrected labels")
        return lines


def read_class_file(path: Path | str) -> tuple[str, ...]:
    """Class names, one a line (blank lines and ``#`` comments skipped); no duplicates."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeError) as error:
        raise ValueError(f"{path}: cannot read class list ({error})") from error
    names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate class names")
    if not names:
        raise ValueError(f"{path}: no class names")
    return tuple(names)


def classes_from_option(value: str | Path) -> tuple[tuple[str, ...], str]:
    """(names, how they were chosen) for ``--classes``: ``voc`` or a classes file."""
    if str(value).lower() == "voc":
        return VOC_CLASSES, "the 20 VOC classes"
    path = Path(value).absolute()
    return read_class_file(path), f"file {path}"
