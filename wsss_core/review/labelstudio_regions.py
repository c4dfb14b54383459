"""Label maps as Label Studio brush regions, and back.

A workspace's label map (0 background, k + 1 class k, 255 ignore) becomes one
brush region per value present other than background: class regions named by
the class, and an ``ignore`` region a reviewer can paint where no class is
right. Background is where no region is. Coming back, regions are laid down
in the order the editor lists them, so where a reviewer's strokes of two
classes overlap, the region listed later wins; a pixel no region covers is
background.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from wsss_core.data.images import voc_palette
from wsss_core.review.brush_rle import decode_mask, encode_mask

IGNORE_VALUE = 255
IGNORE_LABEL = "ignore"
IMAGE_NAME, BRUSH_NAME = "image", "mask"  # the tags' names in the labeling config


class RegionError(ValueError):
    """An annotation's regions cannot be read back as a label map."""


def label_names(class_names: Sequence[str]) -> list[str]:
    """The brush labels of a workspace: its classes, then ``ignore``."""
    if IGNORE_LABEL in class_names:
        raise ValueError(f"a class is named {IGNORE_LABEL!r}, the brush label of ignored pixels")
    return [*class_names, IGNORE_LABEL]


def _value_of(class_names: Sequence[str]) -> dict[str, int]:
    return {**{name: i + 1 for i, name in enumerate(class_names)}, IGNORE_LABEL: IGNORE_VALUE}


def labeling_config(class_names: Sequence[str]) -> str:
    """The project's labeling config: the image and one brush label per class (VOC colours)."""
    label_names(class_names)  # no class may take the ignore label's name
    palette = voc_palette()
    labels = []
    for name, value in _value_of(class_names).items():
        red, green, blue = palette[value * 3 : value * 3 + 3]
        colour = quoteattr(f"#{red:02x}{green:02x}{blue:02x}")
        labels.append(f"    <Label value={quoteattr(name)} background={colour}/>")
    return "\n".join(
        [
            "<View>",
            f'  <Image name="{IMAGE_NAME}" value="$image" zoom="true"/>',
            f'  <BrushLabels name="{BRUSH_NAME}" toName="{IMAGE_NAME}">',
            *labels,
            "  </BrushLabels>",
            "</View>",
        ]
    )


def regions_of(label_map: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One brush region per class (and ignore) present in ``label_map``."""
    height, width = label_map.shape
    names = {value: name for name, value in _value_of(class_names).items()}
    regions = []
    for value in np.unique(label_map).tolist():
        if value == 0:
            continue
        if value not in names:
            raise RegionError(f"label map value {value} is not a workspace class")
        regions.append(
            {
                "from_name": BRUSH_NAME,
                "to_name": IMAGE_NAME,
                "type": "brushlabels",
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {
                    "format": "rle",
                    "rle": encode_mask(label_map == value),
                    "brushlabels": [names[value]],
                },
            }
        )
    return regions


def label_map_of(
    regions: Sequence[dict[str, Any]], class_names: Sequence[str], height: int, width: int
) -> np.ndarray:
    """The label map an annotation's brush regions paint on a ``height`` x ``width`` image."""
    values = _value_of(class_names)
    label_map = np.zeros((height, width), dtype=np.uint8)
    for region in regions:
        if region.get("type") != "brushlabels":
            continue  # other tools (a comment, a rectangle) do not paint the mask
        value = region.get("value") or {}
        names = value.get("brushlabels") or []
        if len(names) != 1 or names[0] not in values:
            raise RegionError(f"a brush region is labelled {names}, not one workspace class")
        size = (region.get("original_height"), region.get("original_width"))
        if size != (height, width):
            raise RegionError(
                f"a brush region is {size[0]} x {size[1]}, the image {height} x {width}"
            )
        if value.get("format") != "rle":
            raise RegionError(f"a brush region in format {value.get('format')!r}, not rle")
        label_map[decode_mask(value["rle"], height, width)] = values[names[0]]
    return label_map
