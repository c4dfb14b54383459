"""Aligned plain-text tables for the benchmarks' printed results."""

from __future__ import annotations


def text_table(rows: list[dict[str, str]]) -> str:
    """The rows (same keys, in order) under a header of their keys, columns left-aligned."""
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(r[k].ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)
