"""The only module that talks to FiftyOne: publish a workspace for review.

FiftyOne reads its database settings when it is first imported, so
:func:`configure_database` must run before anything imports ``fiftyone``; every
function here imports it lazily for that reason.

Sample fields: ``image_id``, ``split``, ``labels`` (Classifications, the
image-level labels), ``ground_truth`` and ``pseudo_mask`` (Segmentation with
``mask_path``, so masks stay on disk), ``crf_confidence`` (mean CRF confidence).
Re-publishing updates these fields in place and never touches sample tags or
any other field a reviewer set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsss_core.config import ReviewConfig
from wsss_core.data.images import voc_palette
from wsss_core.data.manifest import read_manifest
from wsss_core.store.maps import read_label_shard
from wsss_core.store.workspace import Workspace

PUBLISHED_FIELDS = ("labels", "ground_truth", "pseudo_mask")


@dataclass(frozen=True)
class PublishSummary:
    dataset_name: str
    added: int
    updated: int
    database_dir: str | None


def dataset_name_for(workspace: Workspace, config: ReviewConfig) -> str:
    return config.dataset_name or f"wsss-{workspace.root.name}"


def configure_database(workspace: Workspace, config: ReviewConfig) -> str | None:
    """Point FiftyOne at the workspace's database (or the configured one) before import."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    if config.database_uri:
        os.environ["FIFTYONE_DATABASE_URI"] = config.database_uri
        return None
    database_dir = Path(config.database_dir or workspace.fiftyone_db_dir).expanduser().resolve()
    database_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FIFTYONE_DATABASE_DIR"] = str(database_dir)
    _check_not_reconfigured(str(database_dir))
    return str(database_dir)


def _check_not_reconfigured(database_dir: str) -> None:
    import sys

    if "fiftyone" not in sys.modules:
        return
    import fiftyone as fo

    current = fo.config.database_dir
    if current and Path(current).resolve() != Path(database_dir):
        raise RuntimeError(
            f"FiftyOne is already using the database in {current}; one process can use "
            f"one database (wanted {database_dir})"
        )


def _mask_colors(num_labels: int) -> list[dict[str, Any]]:
    palette = voc_palette()
    colors = []
    for value in [*range(1, num_labels), 255]:
        red, green, blue = palette[value * 3 : value * 3 + 3]
        colors.append({"intTarget": value, "color": f"#{red:02x}{green:02x}{blue:02x}"})
    return colors


def _crf_confidence(workspace: Workspace) -> dict[str, float]:
    """Mean CRF confidence per image, read shard by shard."""
    scores: dict[str, float] = {}
    for path in sorted(workspace.maps_dir("crf").glob("part-*.parquet")):
        for record in read_label_shard(path):
            if record.confidence is not None:
                scores[record.image_id] = float(np.mean(record.confidence))
    return scores


def _label_fields(fo: Any, record, class_names: Sequence[str], mask_path: Path) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "labels": fo.Classifications(
            classifications=[fo.Classification(label=class_names[i]) for i in record.labels]
        ),
        "pseudo_mask": fo.Segmentation(mask_path=str(mask_path)) if mask_path.exists() else None,
        "ground_truth": fo.Segmentation(mask_path=record.gt_uri) if record.gt_uri else None,
    }
    return fields


def publish(workspace: Workspace, config: ReviewConfig) -> PublishSummary:
    """Create or update the workspace's FiftyOne dataset from its manifest and masks."""
    database_dir = configure_database(workspace, config)
    import fiftyone as fo

    manifest = read_manifest(workspace)
    name = dataset_name_for(workspace, config)
    dataset = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(name)
    dataset.persistent = True
    targets = {0: "background", **{i + 1: n for i, n in enumerate(manifest.class_names)}}
    dataset.default_mask_targets = {**targets, 255: "ignore"}
    confidence = _crf_confidence(workspace)

    existing = dict(zip(*dataset.values(["image_id", "id"]), strict=True)) if len(dataset) else {}
    new_samples, updates = [], {}
    for record in manifest.records:
        fields = _label_fields(
            fo, record, manifest.class_names, workspace.mask_path(record.image_id)
        )
        fields["crf_confidence"] = confidence.get(record.image_id)
        if record.image_id in existing:
            updates[existing[record.image_id]] = fields
            continue
        sample = fo.Sample(filepath=record.uri, image_id=record.image_id, split=record.split)
        for key, value in fields.items():
            sample[key] = value
        new_samples.append(sample)
    if new_samples:
        dataset.add_samples(new_samples, progress=False)
    if updates:
        for field in (*PUBLISHED_FIELDS, "crf_confidence"):
            dataset.set_values(
                field, {sid: values[field] for sid, values in updates.items()}, key_field="id"
            )
    _configure_app(fo, dataset, len(targets))
    return PublishSummary(name, len(new_samples), len(updates), database_dir)


def _configure_app(fo: Any, dataset: Any, num_labels: int) -> None:
    """Masks visible by default, coloured with the VOC palette the PNGs use."""
    dataset.app_config.active_fields = fo.DatasetAppConfig.default_active_fields(dataset)
    dataset.app_config.active_fields.paths = ["labels", "ground_truth", "pseudo_mask"]
    dataset.app_config.active_fields.exclude = False
    dataset.app_config.color_scheme = fo.ColorScheme(
        color_by="value", opacity=0.6, default_mask_targets_colors=_mask_colors(num_labels)
    )
    dataset.save()


def published_samples(workspace: Workspace, config: ReviewConfig) -> list[dict[str, Any]]:
    """image_id, tags and mask paths of every published sample (for checks and tests)."""
    configure_database(workspace, config)
    import fiftyone as fo

    dataset = fo.load_dataset(dataset_name_for(workspace, config))
    ids, tags, masks, truths = dataset.values(
        ["image_id", "tags", "pseudo_mask.mask_path", "ground_truth.mask_path"]
    )
    return [
        {"image_id": i, "tags": t, "pseudo_mask": m, "ground_truth": g}
        for i, t, m, g in zip(ids, tags, masks, truths, strict=True)
    ]


def app_command(workspace: Workspace) -> str:
    return f"wsss review --workspace {workspace.root}"


def launch_app(workspace: Workspace, config: ReviewConfig, address: str = "127.0.0.1") -> None:
    """Serve the App for the workspace's dataset until Ctrl-C."""
    configure_database(workspace, config)
    import fiftyone as fo

    name = dataset_name_for(workspace, config)
    if not fo.dataset_exists(name):
        raise FileNotFoundError(f"no FiftyOne dataset {name!r}; run the pipeline first")
    session = fo.launch_app(fo.load_dataset(name), remote=True, address=address, port=config.port)
    print(f"FiftyOne App: http://{address}:{config.port}  (Ctrl-C stops it)", flush=True)
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
