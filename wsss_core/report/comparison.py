"""`wsss compare`'s outputs: the table (printed and ``compare.md``), ``compare.json`` and
``compare.png`` (mIoU per stage, one bar group per config)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import numpy as np

from wsss_core.stages.compare import Comparison
from wsss_core.store.atomic import save_figure_atomic, write_text_atomic

# (header, row field, format) in table order
COLUMNS = (
    ("config", "config", "{}"),
    ("stage", "stage", "{}"),
    ("mIoU", "miou", "{:.4f}"),
    ("fg_recall", "fg_recall", "{:.4f}"),
    ("fg_wrong_class", "fg_wrong_class", "{:.4f}"),
    ("bg_to_fg", "bg_to_fg", "{:.4f}"),
    ("emptied", "emptied", "{:.4f}"),
    ("s/image", "seconds_per_image", "{:.4f}"),
)


def _cell(value: object, template: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return template.format(value)


def comparison_table(comparison: Comparison) -> str:
    """A Markdown table padded to line up in a terminal too (NaN shown as ``-``)."""
    cells = [
        [_cell(getattr(row, field), template) for _, field, template in COLUMNS]
        for row in comparison.rows
    ]
    headers = [header for header, _, _ in COLUMNS]
    widths = [max(len(text) for text in column) for column in zip(headers, *cells, strict=True)]
    numeric = [template != "{}" for _, _, template in COLUMNS]

    def line(texts: list[str]) -> str:
        padded = [
            text.rjust(width) if right else text.ljust(width)
            for text, width, right in zip(texts, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        ("-" * (width - 1) + ":") if right else "-" * width
        for width, right in zip(widths, numeric, strict=True)
    ]
    return "\n".join([line(headers), line(rule), *(line(texts) for texts in cells)])


def scored_images(comparison: Comparison) -> int:
    return max((row.images for row in comparison.rows), default=0)


def describe(comparison: Comparison) -> str:
    """The line above the table: what was compared, where the maps are."""
    return (
        f"{comparison.images} image(s) compared, {scored_images(comparison)} scored against "
        f"ground truth; maps under {comparison.out_dir}"
    )


def write_markdown(comparison: Comparison, path: Path) -> Path:
    text = (
        f"# Config comparison: {comparison.workspace}\n\n{describe(comparison)}\n\n"
        f"{comparison_table(comparison)}\n\n"
        "fg_recall: ground-truth object pixels given their class; fg_wrong_class: given "
        "another class; bg_to_fg: background pixels given a class; emptied: share of images "
        "whose mask has none of their labelled classes; s/image: compute seconds per image.\n"
    )
    write_text_atomic(path, text)
    return path


def _json_value(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


def write_json(comparison: Comparison, path: Path) -> Path:
    payload = {
        "workspace": str(comparison.workspace),
        "images": comparison.images,
        "results": [
            {key: _json_value(value) for key, value in asdict(row).items()}
            for row in comparison.rows
        ],
    }
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    write_text_atomic(path, text)
    return path


def save_miou_chart(comparison: Comparison, path: Path) -> Path:
    """Grouped bars: one group per config, one bar per stage, the mIoU written on each."""
    configs = list(dict.fromkeys(row.config for row in comparison.rows))
    stages = list(dict.fromkeys(row.stage for row in comparison.rows))
    miou = {(row.config, row.stage): row.miou for row in comparison.rows}
    width = 0.8 / max(1, len(stages))
    positions = np.arange(len(configs))
    figure, axis = plt.subplots(figsize=(max(5.0, 0.5 * len(configs) * len(stages) + 2), 3.8))
    for index, stage in enumerate(stages):
        values = np.array([miou.get((config, stage), np.nan) for config in configs])
        bars = axis.bar(
            positions + (index - (len(stages) - 1) / 2) * width,
            np.nan_to_num(values),
            width,
            label=stage,
        )
        labels = ["" if np.isnan(v) else f"{v:.3f}" for v in values]
        axis.bar_label(bars, labels=labels, fontsize=7, padding=1)
    axis.set_xticks(positions, configs, fontsize=8)
    axis.set_ylabel("mIoU")
    axis.set_ylim(0, 1.08)
    axis.set_title(f"mIoU per stage ({scored_images(comparison)} images)", fontsize=10)
    axis.legend(
        title="stage", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0)
    )
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    save_figure_atomic(path, figure, dpi=110)
    plt.close(figure)
    return path


def write_comparison(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    """``compare.md``, ``compare.json`` and ``compare.png`` in ``out_dir``."""
    return {
        "markdown": write_markdown(comparison, out_dir / "compare.md"),
        "json": write_json(comparison, out_dir / "compare.json"),
        "chart": save_miou_chart(comparison, out_dir / "compare.png"),
    }
