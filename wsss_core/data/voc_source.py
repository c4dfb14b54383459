"""PASCAL VOC layout: ``wsss ingest voc ROOT`` (ROOT is e.g. ``VOCdevkit/VOC2012``).

::

    ROOT/JPEGImages/<id>.jpg                 images (other extensions accepted)
    ROOT/Annotations/<id>.xml                <object><name>dog</name><difficult>0</difficult>
    ROOT/SegmentationClass/<id>.png          optional ground truth: palette indices, 255 ignore
    ROOT/ImageSets/Segmentation/<split>.txt  ids of each split (else ImageSets/Main/<split>.txt)

Image labels are the object names of the XML; objects marked ``difficult``
count unless ``include_difficult`` is off (an image whose only objects are
difficult ones is then unlabeled). Splits: ``--split train,val`` reads those
id lists; by default every list in ImageSets/Segmentation (else ImageSets/Main,
class lists like ``dog_train.txt`` excluded), leaving out ``trainval`` when
``train`` and ``val`` are there. Without ImageSets every XML is read, split
``train``.

Classes: ``--classes voc`` or a classes file; otherwise the 20 VOC classes when
the root looks like real VOC (named ``VOC<year>`` or inside ``VOCdevkit``),
then ``ROOT/classes.txt``, then the names found, sorted. The manifest states
which.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from wsss_core.data.sources import (
    VOC_CLASSES,
    IngestOptions,
    SourceItem,
    SourceScan,
    classes_from_option,
)
from wsss_core.data.validation import MALFORMED_ANNOTATION, MISSING_FILE, Rejected, resolve_inside

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_REAL_VOC = re.compile(r"VOC\d{4}")


def parse_voc_xml(path: Path, include_difficult: bool = True) -> tuple[str, ...]:
    """Sorted, distinct object names of one annotation file; raises Rejected when malformed."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, UnicodeError) as error:
        raise Rejected(MALFORMED_ANNOTATION, f"{path}: {error}") from error
    names = set()
    for index, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise Rejected(MALFORMED_ANNOTATION, f"{path}: object {index} has no <name>")
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise Rejected(
                MALFORMED_ANNOTATION, f"{path}: object {index} <difficult>{difficult}</difficult>"
            )
        if difficult == "1" and not include_difficult:
            continue
        names.add(name)
    return tuple(sorted(names))


def _split_file(root: Path, split: str) -> Path:
    for folder in ("Segmentation", "Main"):
        path = root / "ImageSets" / folder / f"{split}.txt"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{root}: no ImageSets/Segmentation/{split}.txt or ImageSets/Main/{split}.txt"
    )


def _default_splits(root: Path) -> list[str] | None:
    for folder in ("Segmentation", "Main"):
        directory = root / "ImageSets" / folder
        if not directory.is_dir():
            continue
        # Main also holds per-class lists (dog_train.txt): keep plain split names.
        names = sorted(p.stem for p in directory.glob("*.txt") if "_" not in p.stem)
        if {"train", "val", "trainval"} <= set(names):
            names.remove("trainval")
        if names:
            return names
    return None


def _read_ids(path: Path) -> list[tuple[str, int]]:
    """(id, line number) of a split list: the first token of each non-blank line."""
    ids = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if line.strip():
            ids.append((line.split()[0], number))
    return ids


def _find_image(images_dir: Path, image_id: str, origin: str) -> Path | None:
    for extension in IMAGE_EXTENSIONS:
        candidate = resolve_inside(images_dir, f"{image_id}{extension}", origin)
        if candidate.is_file():
            return candidate
    return None


def _class_names(root: Path, options: IngestOptions) -> tuple[tuple[str, ...] | None, str]:
    if options.classes:
        return classes_from_option(options.classes)
    if _REAL_VOC.fullmatch(root.name) or root.parent.name == "VOCdevkit":
        return VOC_CLASSES, "the 20 VOC classes"
    if (root / "classes.txt").is_file():
        return classes_from_option(root / "classes.txt")
    return None, "names found, sorted"


def scan_voc(root: Path, options: IngestOptions | None = None) -> SourceScan:
    options = options or IngestOptions()
    root = Path(root).absolute()
    images_dir, annotations_dir = root / "JPEGImages", root / "Annotations"
    gt_dir = root / "SegmentationClass"
    for required in (images_dir, annotations_dir):
        if not required.is_dir():
            raise FileNotFoundError(f"{required}: missing; is {root} a VOC-layout dataset?")

    if options.split:
        splits = [s.strip() for s in options.split.split(",") if s.strip()]
    else:
        splits = _default_splits(root)
    listed: list[tuple[str, str, str]] = []  # (id, split, origin)
    if splits:
        for split in splits:
            path = _split_file(root, split)
            listed += [(i, split, f"{path}:{n}") for i, n in _read_ids(path)]
    else:
        listed = [(p.stem, "train", str(p)) for p in sorted(annotations_dir.glob("*.xml"))]

    items = []
    for image_id, split, origin in listed:
        names: tuple[str, ...] = ()
        image_path = gt_path = None
        problem = None
        try:
            image_path = _find_image(images_dir, image_id, origin)
            if image_path is None:
                raise Rejected(MISSING_FILE, f"{origin}: no {images_dir}/{image_id}.jpg")
            xml = resolve_inside(annotations_dir, f"{image_id}.xml", origin)
            if not xml.is_file():
                raise Rejected(MISSING_FILE, f"{origin}: no annotation {xml}")
            names = parse_voc_xml(xml, options.include_difficult)
            candidate = resolve_inside(gt_dir, f"{image_id}.png", origin)
            gt_path = candidate if candidate.is_file() else None
        except Rejected as rejected:
            problem = (rejected.category, rejected.detail)
        items.append(
            SourceItem(image_id, image_path, names, split, origin, gt_path=gt_path, problem=problem)
        )

    class_names, class_list = _class_names(root, options)
    return SourceScan(
        kind="voc",
        root=str(root),
        items=items,
        class_names=class_names,
        class_list=class_list,
        info={
            "splits": ",".join(splits) if splits else "all annotations",
            "include_difficult": str(options.include_difficult).lower(),
        },
        covered_splits=frozenset(splits) if splits else None,
    )
