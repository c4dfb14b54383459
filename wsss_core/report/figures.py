"""Pictures a reviewer reads faster than tables: stage overlays and per-class IoU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import numpy as np

from wsss_core.data.images import voc_palette
from wsss_core.store.atomic import save_figure_atomic

_PALETTE = np.asarray(voc_palette(), np.uint8).reshape(256, 3)


@dataclass(frozen=True)
class StagePanels:
    """Everything drawn for one image: the picture, its CAM and each stage's labels."""

    image_id: str
    image: np.ndarray  # uint8 [H, W, 3]
    cam: np.ndarray  # float [H, W], max over the labelled classes
    label_maps: dict[str, np.ndarray]  # stage name -> uint8 [H, W]


def colorize(labels: np.ndarray) -> np.ndarray:
    """A label map in the VOC colours (255 unknown in VOC's cream)."""
    return _PALETTE[labels]


def blend(image: np.ndarray, labels: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Classes and unknown (255) painted over the image; background left as it is."""
    weight = np.where(labels > 0, alpha, 0.0)[..., None]
    mixed = (1 - weight) * image.astype(np.float32) + weight * colorize(labels)
    return mixed.clip(0, 255).astype(np.uint8)


def save_stage_overlays(panels: Sequence[StagePanels], path: Path) -> Path:
    """One row per image: image, CAM heatmap, then each stage's mask over the image."""
    if not panels:
        raise ValueError("no images to draw")
    stages = list(panels[0].label_maps)
    columns = 2 + len(stages)
    figure, axes = plt.subplots(
        len(panels), columns, figsize=(2.2 * columns, 2.2 * len(panels)), squeeze=False
    )
    for row, panel in zip(axes, panels, strict=True):
        row[0].imshow(panel.image)
        row[0].set_ylabel(panel.image_id, fontsize=7)
        row[1].imshow(panel.image)
        row[1].imshow(panel.cam, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        for axis, stage in zip(row[2:], stages, strict=True):
            axis.imshow(blend(panel.image, panel.label_maps[stage]))
    for axis, title in zip(axes[0], ["image", "CAM", *stages], strict=True):
        axis.set_title(title, fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    save_figure_atomic(path, figure, dpi=110)
    plt.close(figure)
    return path


def save_iou_bars(
    label_names: Sequence[str], iou_by_stage: dict[str, Sequence[float]], path: Path
) -> Path:
    """Grouped bars: IoU per class (background included) for each stage."""
    stages = list(iou_by_stage)
    positions = np.arange(len(label_names))
    width = 0.8 / max(1, len(stages))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.55 * len(label_names) * len(stages)), 3.6))
    for index, stage in enumerate(stages):
        values = np.nan_to_num(np.asarray(iou_by_stage[stage], np.float64), nan=0.0)
        axis.bar(positions + index * width, values, width, label=stage)
    axis.set_xticks(positions + width * (len(stages) - 1) / 2)
    axis.set_xticklabels(label_names, rotation=45, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("IoU")
    axis.legend(fontsize=8, ncol=len(stages))
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    save_figure_atomic(path, figure, dpi=110)
    plt.close(figure)
    return path
