"""A :class:`~wsss_core.config.PipelineConfig` as YAML that documents itself.

Each section gets its docstring's first paragraph as a comment above it and
each field its pydantic ``description``, so ``wsss config show`` doubles as
the reference of every tunable. The text loads back into an equal config.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from wsss_core.config import PipelineConfig

LINE_LENGTH = 100
INDENT = "  "


def commented_yaml(config: PipelineConfig, sources: Mapping[str, str] | None = None) -> str:
    """``config`` as YAML with section docstrings and field descriptions as comments.

    ``PipelineConfig.model_validate(yaml.safe_load(text))`` gives back ``config``.
    Fields that differ from their default say so in their comment. ``sources``
    (dotted key -> ``default``, ``saved``, ``file``, ...) starts each field's
    comment with where its value came from, in brackets.
    """
    lines = _comment(_first_paragraph(type(config)), "")
    lines += _model_lines(config, "", "", sources or {})
    return "\n".join(lines) + "\n"


def _model_lines(
    model: BaseModel, indent: str, prefix: str, sources: Mapping[str, str]
) -> list[str]:
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append("")  # sections stand apart
            lines += _comment(_first_paragraph(type(value)), indent)
            lines.append(f"{indent}{name}:")
            lines += _model_lines(value, indent + INDENT, f"{prefix}{name}.", sources)
            continue
        source = sources.get(prefix + name)
        notes = [f"[{source}]"] if source else []
        notes += [field.description] if field.description else []
        default = field.get_default(call_default_factory=True)
        if value != default:
            notes.append(f"(default: {_scalar(default)})")
        lines += _field_lines(f"{indent}{name}: {_scalar(value)}", " ".join(notes), indent)
    return lines


def _field_lines(entry: str, note: str, indent: str) -> list[str]:
    """``entry  # note`` when it fits on one line, else the note wrapped above the entry."""
    if not note:
        return [entry]
    trailing = f"{entry}  # {note}"
    if len(trailing) <= LINE_LENGTH:
        return [trailing]
    return [*_comment(note, indent), entry]


def _comment(text: str, indent: str) -> list[str]:
    if not text:
        return []
    width = LINE_LENGTH - len(indent) - 2
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width, break_on_hyphens=False)]


def _first_paragraph(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _scalar(value: Any) -> str:
    """One value in YAML flow style on one line (lists included), quoted where needed."""
    value = to_jsonable_python(value)  # tuples -> lists, which safe_dump knows
    # Double quotes escape newlines and tabs instead of folding them onto new lines.
    style = '"' if isinstance(value, str) and not value.isprintable() else None
    text = yaml.safe_dump(
        value, default_flow_style=True, default_style=style, width=math.inf, allow_unicode=True
    )
    # A bare scalar document ends with an explicit end marker ("...") that a value must not carry.
    return text.removesuffix("\n...\n").rstrip("\n")
