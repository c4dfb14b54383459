"""Per-epoch training metrics: ``models/history.parquet`` and ``models/training_curves.png``.

``history.parquet`` (metadata: ``schema_version``, ``class_names``, ``backbone``,
``config``, ``epochs``, ``best_epoch``, ``complete``):

=========== ============== ====================================================
column      type           meaning
=========== ============== ====================================================
epoch       int32          1-based
train_loss  float64        mean BCE-with-logits over the epoch's batches
val_map     float64        validation mAP (classes without a positive skipped)
val_ap      list<float64>  per-class validation AP, manifest class order; NaN
                           for a class without a positive validation image
lr          float64        head learning rate at the end of the epoch
backbone_lr float64        backbone learning rate at the end of the epoch
seconds     float64        wall time of the epoch, validation included
=========== ============== ====================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from wsss_core.store.atomic import save_figure_atomic
from wsss_core.store.parquet_io import read_metadata, read_table, write_table

HISTORY_SCHEMA_VERSION = 1

HISTORY_SCHEMA = pa.schema(
    [
        ("epoch", pa.int32()),
        ("train_loss", pa.float64()),
        ("val_map", pa.float64()),
        ("val_ap", pa.list_(pa.float64())),
        ("lr", pa.float64()),
        ("backbone_lr", pa.float64()),
        ("seconds", pa.float64()),
    ]
)


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_map: float
    val_ap: tuple[float, ...]
    lr: float
    backbone_lr: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["val_ap"] = list(self.val_ap)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> EpochMetrics:
        return cls(
            epoch=int(row["epoch"]),
            train_loss=float(row["train_loss"]),
            val_map=float(row["val_map"]),
            val_ap=tuple(float("nan") if v is None else float(v) for v in row["val_ap"]),
            lr=float(row["lr"]),
            backbone_lr=float(row["backbone_lr"]),
            seconds=float(row["seconds"]),
        )


def write_history(
    path: Path,
    history: Sequence[EpochMetrics],
    class_names: Sequence[str],
    config: dict[str, Any],
    best_epoch: int | None,
    complete: bool,
) -> None:
    """Write the per-epoch table atomically (the whole run so far, each epoch)."""
    rows = [metrics.as_dict() for metrics in history]
    table = pa.Table.from_pylist(rows, schema=HISTORY_SCHEMA)
    metadata = {
        "schema_version": HISTORY_SCHEMA_VERSION,
        "class_names": list(class_names),
        "backbone": config["backbone"],
        "config": config,
        "epochs": config["epochs"],
        "best_epoch": best_epoch,
        "complete": complete,
    }
    write_table(path, table, metadata)


def read_history(path: Path) -> tuple[list[EpochMetrics], dict[str, Any]]:
    """(per-epoch metrics, file metadata) of a ``history.parquet``."""
    rows = read_table(path).to_pylist()
    return [EpochMetrics.from_dict(row) for row in rows], read_metadata(path)


def plot_curves(path: Path, history: Sequence[EpochMetrics], title: str = "") -> None:
    """Training loss and validation mAP per epoch as a PNG (matplotlib Agg, atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [m.epoch for m in history]
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axis, map_axis = figure.subplots(1, 2)
    loss_axis.plot(epochs, [m.train_loss for m in history], marker="o")
    loss_axis.set(xlabel="epoch", ylabel="train loss (BCE)", title="training loss")
    scores = [m.val_map for m in history]
    map_axis.plot(epochs, scores, marker="o", color="tab:green")
    finite = [(e, s) for e, s in zip(epochs, scores, strict=True) if math.isfinite(s)]
    if finite:
        best_epoch, best = max(finite, key=lambda item: item[1])
        map_axis.scatter([best_epoch], [best], s=120, facecolors="none", edgecolors="tab:red")
        map_axis.annotate(
            f"best {best:.3f} (epoch {best_epoch})",
            (best_epoch, best),
            textcoords="offset points",
            xytext=(0, -16),
            ha="right" if best_epoch == epochs[-1] and len(epochs) > 1 else "center",
            fontsize=8,
        )
    map_axis.set(xlabel="epoch", ylabel="validation mAP", title="validation mAP", ylim=(0, 1.02))
    for axis in (loss_axis, map_axis):
        axis.grid(alpha=0.3)
        if epochs:
            axis.set_xticks(epochs if len(epochs) <= 20 else epochs[:: math.ceil(len(epochs) / 20)])
    if title:
        figure.suptitle(title, fontsize=9)
    save_figure_atomic(path, figure, dpi=100)
