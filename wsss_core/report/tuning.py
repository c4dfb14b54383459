"""What `wsss tune` prints: the settings it changed and the held-out figures."""

from __future__ import annotations

import math

from wsss_core.stages.tune import TuneResult
from wsss_core.tuning.space import get_value


def tune_lines(result: TuneResult) -> list[str]:
    search, report = result.search, result.held_out
    lines = [
        f"searched {len(search.trials)} setting(s) in {search.seconds:.0f} s"
        + ("" if search.finished else " (budget spent before the last grids)"),
    ]
    if search.changes:
        lines.append("changed:")
        lines += [
            f"  {key}: {get_value(search.start, key)} -> {value}"
            for key, value in search.changes.items()
        ]
    else:
        lines.append("no setting beat the current ones on the tuning images")
    lines += [
        "",
        f"held-out final mIoU over {report.default.images} image(s) the search never saw "
        "(each with the heads a run of it trains):",
        f"  current settings  {report.default.describe()}",
        f"  tuned settings    {report.tuned.describe()}",
        f"  gain              {report.gain.miou:+.3f} "
        f"[{report.gain.low:+.3f}, {report.gain.high:+.3f}] (paired bootstrap)",
        "",
        "IoU per class on the held-out images (current -> tuned):",
    ]
    pairs = zip(report.default.iou_per_label, report.tuned.iou_per_label, strict=True)
    for name, (before, after) in zip(report.label_names, pairs, strict=True):
        if math.isnan(before) and math.isnan(after):
            continue
        lines.append(f"  {name:<16} {before:.3f} -> {after:.3f}")
    return lines
