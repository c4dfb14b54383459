"""An existing FiftyOne dataset as a source: ``wsss ingest fiftyone DATASET``.

Besides ``fiftyone_adapter`` and ``fiftyone_database``, the only module that
touches FiftyOne; it imports it lazily, after
:func:`~wsss_core.review.fiftyone_adapter.configure_database` has pointed it
at the right database (``review.database_dir`` / ``review.database_uri``;
default ``<workspace>/fiftyone-db``).

* image: the sample's ``filepath``; id: its file stem (duplicates quarantined);
* labels: a ``Classifications`` (or ``Classification``) field, ``labels_field``;
* ground truth (optional): a ``Segmentation`` field, ``gt_field``, with its
  mask on disk (``mask_path``) or in the database (``mask``). Mask values are
  translated through the dataset's mask targets to our convention (0
  background, class id + 1, 255 ignore): a target named ``background`` becomes
  0, one that is not a class becomes 255. Without mask targets the values are
  taken as they are;
* split: a ``split`` string field, else a ``train`` / ``val`` / ``test`` tag,
  else ``--split`` (default ``train``);
* classes: ``--classes``, else the dataset's classes for the field (or its
  default classes), else the names found, sorted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wsss_core.config import ReviewConfig
from wsss_core.data.sources import IngestOptions, SourceItem, SourceScan, classes_from_option
from wsss_core.data.validation import MISSING_FILE, UNREADABLE_GT
from wsss_core.review.fiftyone_adapter import configure_database
from wsss_core.store.workspace import Workspace

SPLIT_TAGS = ("train", "val", "test")
BACKGROUND_NAMES = frozenset({"background", "bg", "_background_", "__background__"})
IGNORE = 255


def _label_path(fo: Any, dataset: Any, field: str) -> str:
    """The ``values()`` path of a label field's class names."""
    schema = dataset.get_field_schema()
    if field not in schema:
        raise ValueError(f"dataset {dataset.name!r} has no field {field!r}")
    document = getattr(schema[field], "document_type", None)
    if document is fo.Classifications:
        return f"{field}.classifications.label"
    if document is fo.Classification:
        return f"{field}.label"
    raise ValueError(
        f"dataset {dataset.name!r}: field {field!r} is {schema[field]}, not Classifications"
    )


def _value_lookup(
    targets: dict[Any, str] | None, class_names: tuple[str, ...]
) -> Callable[[int], int] | None:
    """Mask value -> our label value, or None to keep values as they are."""
    if not targets:
        return None
    index = {name: i for i, name in enumerate(class_names)}
    mapping = {}
    for value, name in targets.items():
        if str(name).lower() in BACKGROUND_NAMES:
            mapping[int(value)] = 0
        elif name in index:
            mapping[int(value)] = index[name] + 1
    return lambda value: mapping.get(int(value), 0 if value == 0 and 0 not in targets else IGNORE)


def _mask_renderer(
    mask: np.ndarray | None, mask_path: str | None, targets: dict[Any, str] | None
) -> Callable[[tuple[str, ...]], np.ndarray]:
    def render(class_names: tuple[str, ...]) -> np.ndarray:
        lookup = _value_lookup(targets, class_names)
        if mask is not None:
            array = np.asarray(mask)
        else:
            from PIL import Image

            with Image.open(mask_path) as image:
                array = np.asarray(image)
        if array.ndim != 2 or array.dtype.kind not in "ui":
            raise ValueError(
                f"mask {mask_path or '(in database)'} is {array.dtype} {array.shape}; "
                "expected an integer [H, W] label mask"
            )
        if lookup is None:
            if array.size and int(array.max()) > IGNORE:
                raise ValueError(f"mask {mask_path or '(in database)'} has values above 255")
            return array.astype(np.uint8)
        out = np.full(array.shape, IGNORE, np.uint8)
        for value in np.unique(array):
            out[array == value] = lookup(int(value))
        return out

    return render


def scan_fiftyone(
    dataset_name: str,
    workspace: Workspace,
    options: IngestOptions | None = None,
    review: ReviewConfig | None = None,
) -> SourceScan:
    options = options or IngestOptions()
    configure_database(workspace, review or ReviewConfig())
    import fiftyone as fo

    if not fo.dataset_exists(dataset_name):
        raise FileNotFoundError(f"no FiftyOne dataset {dataset_name!r} in this database")
    dataset = fo.load_dataset(dataset_name)
    label_path = _label_path(fo, dataset, options.labels_field)
    schema = dataset.get_field_schema()

    if options.classes:
        class_names, class_list = classes_from_option(options.classes)
    else:
        listed = dataset.classes.get(options.labels_field) or dataset.default_classes
        class_names = tuple(listed) if listed else None
        class_list = "dataset classes" if listed else "names found, sorted"

    paths = dataset.values("filepath")
    raw_labels = dataset.values(label_path)
    if label_path.endswith(".classifications.label"):
        names_per_sample = [tuple(sorted(set(x or ()))) for x in raw_labels]
    else:
        names_per_sample = [(x,) if x else () for x in raw_labels]
    tags = dataset.values("tags")
    if "split" in schema:
        splits = [s if isinstance(s, str) and s else None for s in dataset.values("split")]
    else:
        splits = [None] * len(paths)

    masks: list[Any] = [None] * len(paths)
    mask_paths: list[Any] = [None] * len(paths)
    targets = None
    if options.gt_field:
        if options.gt_field not in schema:
            raise ValueError(f"dataset {dataset_name!r} has no field {options.gt_field!r}")
        document = getattr(schema[options.gt_field], "document_type", None)
        if document is not fo.Segmentation:
            raise ValueError(f"dataset {dataset_name!r}: {options.gt_field!r} is not Segmentation")
        mask_paths = dataset.values(f"{options.gt_field}.mask_path")
        masks = dataset.values(f"{options.gt_field}.mask")
        targets = dataset.mask_targets.get(options.gt_field) or dataset.default_mask_targets

    items = []
    for index, filepath in enumerate(paths):
        origin = f"dataset {dataset_name!r} sample {index} ({filepath})"
        path = Path(filepath) if filepath else None
        split = splits[index] or next(
            (t for t in SPLIT_TAGS if t in (tags[index] or ())), options.split or "train"
        )
        problem = None
        if path is None or not path.is_absolute():
            problem = (MISSING_FILE, f"{origin}: no absolute filepath")
        render = None
        if masks[index] is not None or mask_paths[index]:
            if mask_paths[index] and not Path(mask_paths[index]).is_file():
                problem = problem or (UNREADABLE_GT, f"{mask_paths[index]}: no such file")
            else:
                render = _mask_renderer(masks[index], mask_paths[index], targets)
        items.append(
            SourceItem(
                path.stem if path else "",
                path,
                names_per_sample[index],
                split,
                origin,
                gt_render=render,
                problem=problem,
            )
        )
    info = {"dataset": dataset_name, "labels_field": options.labels_field}
    if options.gt_field:
        info["gt_field"] = options.gt_field
    return SourceScan(
        kind="fiftyone",
        root=dataset_name,
        items=items,
        class_names=class_names,
        class_list=class_list,
        info=info,
    )
