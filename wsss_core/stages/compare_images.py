"""Which images a `wsss compare` or `wsss tune` computes maps of: their own manifest.

The compared images' manifest lives under the compare directory's
``<images>`` folder (``store/comparison.py``): ``all``, or a hash of the
chosen ids, so the same set always finds its maps again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from wsss_core.data.manifest import Manifest, read_manifest, write_manifest
from wsss_core.store.comparison import ComparisonLayout
from wsss_core.store.workspace import Workspace

ALL_IMAGES = "all"


def images_key(manifest: Manifest, image_ids: Sequence[str] | None) -> str:
    """``all``, or a hash of the chosen ids in manifest order (the same set, the same key)."""
    if image_ids is None:
        return ALL_IMAGES
    chosen = set(image_ids)
    ordered = [record.image_id for record in manifest.records if record.image_id in chosen]
    if len(ordered) == len(manifest.records):
        return ALL_IMAGES
    return hashlib.sha256("\n".join(ordered).encode()).hexdigest()[:16]


def unknown_image_ids(manifest: Manifest, image_ids: Sequence[str]) -> list[str]:
    """The ids that are no usable image of the manifest (removed, quarantined or never seen)."""
    usable = {record.image_id for record in manifest.records}
    return [image_id for image_id in image_ids if image_id not in usable]


def write_images_manifest(
    workspace: Workspace, layout: ComparisonLayout, image_ids: Sequence[str] | None
) -> tuple[str, Manifest]:
    """The compared images' manifest under the layout; rewritten only when its rows changed.

    All images: every row, removed ones included, so shard ``i`` holds the
    workspace's shard ``i`` images. Chosen images: their rows in manifest order.
    """
    manifest = read_manifest(workspace)
    if image_ids is not None:
        unknown = unknown_image_ids(manifest, image_ids)
        if unknown:
            raise ValueError(
                f"{len(unknown)} image id(s) are no usable image of {workspace.manifest_path} "
                f"(e.g. {unknown[0]!r})"
            )
    key = images_key(manifest, image_ids)
    chosen = None if key == ALL_IMAGES else set(image_ids or ())
    rows = [row for row in manifest.all_rows if chosen is None or row.image_id in chosen]
    target = Workspace(layout.images_dir(key))  # a plain workspace: only its manifest is used
    if target.manifest_path.exists():
        previous = read_manifest(target)
        if previous.all_rows == tuple(rows) and previous.class_names == manifest.class_names:
            return key, previous
    return key, write_manifest(target, rows, manifest.class_names, manifest.source)
