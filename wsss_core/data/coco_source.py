"""COCO instances JSON: ``wsss ingest coco PATH`` (the JSON file, or the dataset folder).

Image labels are the categories of each image's annotations (crowd ones
included); an image without annotations is kept as ``unlabeled``. Classes are
the JSON's categories in id order (COCO's sparse ids 1..90 become class ids
0..79), unless ``--classes`` gives a list. With ``rasterize_masks`` each
image's ground truth is drawn from its polygons / RLE (larger objects first,
so smaller ones stay visible; crowd regions get their class) and written to
``<workspace>/ground_truth/<image_id>.png``.

Layout: ``PATH`` may be the JSON, or a folder holding
``annotations/instances_<split>.json`` (``--split`` picks one when there are
several). Images: ``--images``, else ``<root>/<split>/`` (COCO's own layout,
e.g. ``val2017/``), else ``<root>/images/``, else next to the JSON. The image
id is the file name's stem. The manifest split is ``--split`` when given for a
JSON path, else ``val`` when the JSON's name contains ``val``, else ``train``.

A JSON that does not parse, or lacks ``images`` / ``categories``, stops the
ingest with the file named; a malformed image or annotation entry only
quarantines what it concerns.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wsss_core.data.coco_masks import segmentation_to_mask
from wsss_core.data.manifest import QuarantinedItem
from wsss_core.data.sources import IngestOptions, SourceItem, SourceScan, classes_from_option
from wsss_core.data.validation import (
    DUPLICATE_ID,
    MALFORMED_ANNOTATION,
    UNKNOWN_CLASS,
    Rejected,
    resolve_inside,
)


def _find_json(path: Path, options: IngestOptions) -> Path:
    if options.labels:
        return Path(options.labels).absolute()
    if path.is_file():
        return path
    candidates = sorted((path / "annotations").glob("instances_*.json"))
    if options.split:
        wanted = path / "annotations" / f"instances_{options.split}.json"
        if wanted.is_file():
            return wanted
        raise FileNotFoundError(f"{wanted}: missing")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(f"{path}: no annotations/instances_*.json; pass the JSON file")
    names = ", ".join(c.stem.removeprefix("instances_") for c in candidates)
    raise ValueError(f"{path}: several instance files ({names}); choose one with --split")


def _images_dir(json_path: Path, options: IngestOptions) -> Path:
    if options.images:
        return Path(options.images).absolute()
    parent = json_path.parent
    root = parent.parent if parent.name == "annotations" else parent
    name = json_path.stem.removeprefix("instances_")
    for candidate in (root / name, root / "images"):
        if candidate.is_dir():
            return candidate
    return root


def load_coco_json(path: Path) -> dict[str, Any]:
    """The parsed file; ValueError naming it when it is not a COCO instances file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeError, OSError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with images, annotations, categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: no '{key}' list; not a COCO instances file")
    if not isinstance(data.get("annotations", []), list):
        raise ValueError(f"{path}: 'annotations' is not a list")
    return data


def _categories(data: dict[str, Any], path: Path) -> dict[int, str]:
    categories = {}
    for index, category in enumerate(data["categories"]):
        if not (
            isinstance(category, dict)
            and isinstance(category.get("id"), int)
            and isinstance(category.get("name"), str)
            and category["name"].strip()
        ):
            raise ValueError(f"{path}: categories[{index}] needs an integer id and a name")
        if category["id"] in categories:
            raise ValueError(f"{path}: category id {category['id']} appears twice")
        categories[category["id"]] = category["name"].strip()
    return dict(sorted(categories.items()))


def _renderer(
    annotations: list[dict[str, Any]], height: int, width: int, categories: dict[int, str]
) -> Callable[[tuple[str, ...]], np.ndarray]:
    """A closure drawing one image's label map (0 bg, class id + 1), larger objects first."""

    def render(class_names: tuple[str, ...]) -> np.ndarray:
        position = {name: index for index, name in enumerate(class_names)}
        value_of = {cid: position[n] + 1 for cid, n in categories.items() if n in position}
        labels = np.zeros((height, width), np.uint8)
        masks = []
        for annotation in annotations:
            try:
                mask = segmentation_to_mask(annotation.get("segmentation"), height, width)
            except ValueError as error:
                raise ValueError(f"annotation {annotation.get('id')}: {error}") from error
            masks.append((int(mask.sum()), value_of[annotation["category_id"]], mask))
        for _, value, mask in sorted(masks, key=lambda m: -m[0]):
            labels[mask] = value
        return labels

    return render


def scan_coco(path: Path, options: IngestOptions | None = None) -> SourceScan:
    options = options or IngestOptions()
    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    json_path = _find_json(path, options)
    images_dir = _images_dir(json_path, options)
    data = load_coco_json(json_path)
    categories = _categories(data, json_path)
    if options.classes:
        class_names, class_list = classes_from_option(options.classes)
    else:
        class_names, class_list = tuple(categories.values()), "COCO categories, by id"
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"{json_path}: two categories share a name")
    if options.split and path.is_file():
        split = options.split
    else:
        split = "val" if "val" in json_path.stem.lower() else "train"

    rejected: list[QuarantinedItem] = []
    entries: dict[Any, dict[str, Any]] = {}
    problems: dict[Any, tuple[str, str]] = {}
    for index, image in enumerate(data["images"]):
        origin = f"{json_path.name} images[{index}]"
        if not (
            isinstance(image, dict)
            and isinstance(image.get("id"), int | str)
            and isinstance(image.get("file_name"), str)
            and image["file_name"].strip()
        ):
            detail = f"{origin}: needs an id and a file_name"
            rejected.append(QuarantinedItem(f"<{origin}>", "", f"{MALFORMED_ANNOTATION}: {detail}"))
            continue
        image = {**image, "_origin": origin}
        if image["id"] in entries:  # annotations could not tell the two apart
            first = entries[image["id"]]["_origin"]
            image["_problem"] = (DUPLICATE_ID, f"{origin}: COCO id {image['id']!r} as {first}")
            entries[(image["id"], index)] = image
        else:
            entries[image["id"]] = image

    per_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for index, annotation in enumerate(data.get("annotations", [])):
        origin = f"{json_path.name} annotations[{index}]"
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            detail = f"{origin}: not an object with an image_id"
            rejected.append(QuarantinedItem(f"<{origin}>", "", f"{MALFORMED_ANNOTATION}: {detail}"))
            continue
        image_key = annotation["image_id"]
        if image_key not in entries:
            detail = f"{origin}: image_id {image_key!r} is not in images"
            rejected.append(QuarantinedItem(f"<{origin}>", "", f"{MALFORMED_ANNOTATION}: {detail}"))
            continue
        category = annotation.get("category_id")
        if category not in categories:
            problems.setdefault(
                image_key, (UNKNOWN_CLASS, f"{origin}: category_id {category!r} is not a category")
            )
            continue
        per_image[image_key].append(annotation)

    items = []
    for key, image in entries.items():
        origin = image["_origin"]
        file_name = image["file_name"].strip()
        image_id = Path(file_name).stem
        annotations = per_image.get(key, [])
        names = tuple(sorted({categories[a["category_id"]] for a in annotations}))
        problem = image.get("_problem") or problems.get(key)
        image_path = None
        try:
            image_path = resolve_inside(images_dir, file_name, origin)
        except Rejected as error:
            problem = (error.category, error.detail)
        render = None
        if options.rasterize_masks and problem is None:
            height, width = image.get("height"), image.get("width")
            if not (isinstance(height, int) and isinstance(width, int) and height > 0 < width):
                problem = (MALFORMED_ANNOTATION, f"{origin}: needs integer width and height")
            elif all(name in class_names for name in names):
                render = _renderer(annotations, height, width, categories)
        items.append(
            SourceItem(
                image_id, image_path, names, split, origin, gt_render=render, problem=problem
            )
        )

    return SourceScan(
        kind="coco",
        root=str(images_dir),
        items=items,
        class_names=class_names,
        class_list=class_list,
        info={"annotations": str(json_path), "split": split},
        rejected=rejected,
        covered_splits=frozenset({split}),
    )
