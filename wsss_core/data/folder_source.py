"""A folder of images plus a CSV or JSONL of image-level labels, the simplest source.

Layout read by ``wsss ingest folder ROOT`` (each part can be pointed elsewhere)::

    ROOT/images/<image_id>.<ext>    any format Pillow reads; sub-folders allowed
    ROOT/labels.csv                 image_id,labels[,split]      labels: "dog;person"
      or ROOT/labels.jsonl          {"image_id": "a", "labels": ["dog"], "split": "val"}
    ROOT/classes.txt                optional: class order, one name a line
    ROOT/masks/<image_id>.png       optional ground truth (0 bg, k+1 class k, 255 ignore)

``image_id`` is a file stem in the images folder or a path relative to it
(``sub/a.jpg`` gives id ``a``). Without ``classes.txt`` the classes are the
sorted names found. An empty ``labels`` cell keeps the image for inference
(status ``unlabeled``). The demo dataset uses exactly this layout.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from wsss_core.config import DemoConfig
from wsss_core.data.manifest import QuarantinedItem
from wsss_core.data.sources import (
    IngestOptions,
    SourceItem,
    SourceScan,
    classes_from_option,
)
from wsss_core.data.validation import (
    MALFORMED_ROW,
    MISSING_FILE,
    Rejected,
    resolve_inside,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
LABEL_FILES = ("labels.csv", "labels.jsonl")


def _find_image(images_dir: Path, name: str, origin: str) -> Path | None:
    """The image a row names: ``name`` itself when it has an image extension, else name.<ext>."""
    direct = resolve_inside(images_dir, name, origin)
    if direct.suffix.lower() in IMAGE_EXTENSIONS and direct.is_file():
        return direct
    for extension in IMAGE_EXTENSIONS:
        for suffix in (extension, extension.upper()):
            candidate = direct.with_name(direct.name + suffix)
            if candidate.is_file():
                return candidate
    return None


def _utf8(values: list[str]) -> bool:
    try:
        for value in values:
            value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, str] | None, str | None]]:
    """(origin, row or None, problem or None) for each non-blank data row."""
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader)]
        except (StopIteration, csv.Error) as error:
            raise ValueError(f"{path}: no readable header row ({error})") from None
        missing = {"image_id", "labels"} - set(header)
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; header is {header}")
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield f"{path}:{reader.line_num}", None, f"unparsable ({error})"
                continue
            origin = f"{path}:{reader.line_num}"
            if not any(value.strip() for value in values):
                continue
            if len(values) != len(header):
                yield origin, None, f"{len(values)} fields, the header has {len(header)}"
            elif not _utf8(values):
                yield origin, None, "not valid UTF-8"
            else:
                yield origin, dict(zip(header, values, strict=True)), None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, str] | None, str | None]]:
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            origin = f"{path}:{number}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeError) as error:
                yield origin, None, f"not JSON ({error})"
                continue
            if not isinstance(row, dict) or not isinstance(row.get("image_id"), str):
                yield origin, None, "expected an object with a string 'image_id'"
                continue
            labels = row.get("labels", "")
            if isinstance(labels, list) and all(isinstance(x, str) for x in labels):
                labels = "\x00".join(labels)  # joined by a separator no name can hold
            elif not isinstance(labels, str):
                yield origin, None, "'labels' must be a string or a list of strings"
                continue
            split = row.get("split")
            if split is not None and not isinstance(split, str):
                yield origin, None, "'split' must be a string"
                continue
            yield origin, {"image_id": row["image_id"], "labels": labels, "split": split}, None


def scan_folder(
    images_dir: Path,
    labels_file: Path,
    classes_file: Path | str | None = None,
    masks_dir: Path | None = None,
    separator: str = ";",
    default_split: str = "train",
    kind: str = "folder",
) -> SourceScan:
    """Read a labels file (CSV, or JSONL by its extension) into a scan; see module docstring."""
    images_dir, labels_file = Path(images_dir).absolute(), Path(labels_file).absolute()
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir}: no images folder")
    if not labels_file.is_file():
        raise FileNotFoundError(f"{labels_file}: no labels file")
    jsonl = labels_file.suffix.lower() in (".jsonl", ".ndjson")
    rows = _jsonl_rows(labels_file) if jsonl else _csv_rows(labels_file)
    items: list[SourceItem] = []
    rejected: list[QuarantinedItem] = []
    for origin, row, problem in rows:
        if row is None:
            rejected.append(
                QuarantinedItem(f"<{origin}>", "", f"{MALFORMED_ROW}: {origin}: {problem}")
            )
            continue
        name = (row.get("image_id") or "").strip()
        suffix = Path(name).suffix.lower()
        image_id = Path(name).stem if suffix in IMAGE_EXTENSIONS else name
        labels_cell = row.get("labels") or ""
        split_on = "\x00" if "\x00" in labels_cell else separator
        names = tuple(n.strip() for n in labels_cell.split(split_on) if n.strip())
        split = (row.get("split") or "").strip() or default_split
        problem_pair, path = None, None
        try:
            path = _find_image(images_dir, name, origin) if name else None
            if name and path is None:
                problem_pair = (MISSING_FILE, f"{origin}: no image named {name!r} in {images_dir}")
        except Rejected as rejected_path:
            problem_pair = (rejected_path.category, rejected_path.detail)
        gt_path = None
        if masks_dir is not None and problem_pair is None and "/" not in image_id:
            candidate = Path(masks_dir).absolute() / f"{image_id}.png"
            gt_path = candidate if candidate.is_file() else None
        items.append(
            SourceItem(image_id, path, names, split, origin, gt_path=gt_path, problem=problem_pair)
        )
    class_names, class_list = None, "names found, sorted"
    if classes_file is not None:
        class_names, class_list = classes_from_option(classes_file)
    return SourceScan(
        kind=kind,
        root=str(images_dir.parent),
        items=items,
        class_names=class_names,
        class_list=class_list,
        info={"labels": str(labels_file), "images": str(images_dir)},
        rejected=rejected,
    )


def _default_labels_file(root: Path) -> Path:
    for name in LABEL_FILES:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root}: no {' or '.join(LABEL_FILES)}; pass --labels FILE")


def scan_folder_root(root: Path, options: IngestOptions, kind: str = "folder") -> SourceScan:
    """``wsss ingest folder ROOT``: the layout in the module docstring, overridable by options."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    images = Path(options.images) if options.images else root / "images"
    labels = Path(options.labels) if options.labels else _default_labels_file(root)
    if options.classes:
        classes = options.classes
    else:
        classes = root / "classes.txt" if (root / "classes.txt").is_file() else None
    masks = Path(options.masks) if options.masks else root / "masks"
    return scan_folder(
        images,
        labels,
        classes_file=classes,
        masks_dir=masks if masks.is_dir() else None,
        separator=options.separator,
        default_split=options.split or "train",
        kind=kind,
    )


def scan_demo(out_dir: Path, demo: DemoConfig | None = None) -> SourceScan:
    """Generate the demo dataset of ``demo.kind`` in ``out_dir`` (deterministic); scan it."""
    from wsss_core.data.demo import generate_demo_dataset
    from wsss_core.data.scenes import generate_scenes_dataset

    demo = demo or DemoConfig()
    generate = generate_scenes_dataset if demo.kind == "scenes" else generate_demo_dataset
    dataset = generate(
        Path(out_dir), num_images=demo.num_images, image_size=demo.canvas_side, seed=demo.seed
    )
    return scan_folder(
        dataset.images_dir,
        dataset.labels_csv,
        classes_file=dataset.classes_txt,
        masks_dir=dataset.masks_dir,
        kind="demo",
    )
