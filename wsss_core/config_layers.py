"""A config built from layers: the defaults, then the workspace's saved config, a file, flags.

Each layer is a partial mapping of sections, as a YAML config file holds.
Later layers win key by key inside a section; the keys a layer does not name
keep the value below them, as users of layered config tools expect. The merged
mapping is validated once, and an error names the layer (the file) that gave
the bad key. :meth:`LayeredConfig.source_of` tells where each value came from,
for ``wsss config show``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from wsss_core.config import ConfigError, PipelineConfig, describe_error_item, read_config_file

DEFAULT = "default"  # the source of a value no layer names


@dataclass(frozen=True)
class ConfigLayer:
    """One layer: ``source`` is its kind (``saved``, ``file``, ``flag``), ``label`` its name."""

    source: str
    label: str
    values: Mapping[str, Any]

    @classmethod
    def from_file(cls, source: str, path: str | Path) -> ConfigLayer:
        return cls(source, str(path), read_config_file(path))

    def has(self, key: str) -> bool:
        """Whether this layer names ``key`` (``device``, ``crf``, ``crf.bilateral_srgb``)."""
        section, _, name = key.partition(".")
        if section not in self.values:
            return False
        values = self.values[section]
        return not name or (isinstance(values, Mapping) and name in values)


@dataclass(frozen=True)
class LayeredConfig:
    """The validated config and the layers it was merged from, lowest first."""

    config: PipelineConfig
    layers: tuple[ConfigLayer, ...] = ()

    def source_of(self, key: str) -> str:
        """The source of the layer that gave ``key``'s value, else :data:`DEFAULT`."""
        for layer in reversed(self.layers):
            if layer.has(key):
                return layer.source
        return DEFAULT

    def sources(self) -> dict[str, str]:
        """Every setting's dotted key -> its source."""
        return {key: self.source_of(key) for key in setting_keys(self.config)}

    def describe(self) -> str:
        """Where the values come from, top layer first: ``b.yaml over ws/config.yaml over ...``."""
        return " over ".join([*(layer.label for layer in reversed(self.layers)), "the defaults"])


def setting_keys(model: BaseModel, prefix: str = "") -> Iterator[str]:
    """The dotted key of every setting of ``model``, sections walked into."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from setting_keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def merge_layers(layers: Sequence[ConfigLayer]) -> dict[str, Any]:
    """The layers' mappings merged: per key inside a section, later layers winning.

    A value that is not a mapping (a top-level setting, or a malformed section)
    replaces what was below it.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.values.items():
            below = merged.get(key)
            if isinstance(value, Mapping) and isinstance(below, Mapping):
                merged[key] = {**below, **value}
            else:
                merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def layered_config(layers: Sequence[ConfigLayer]) -> LayeredConfig:
    """The layers over the defaults, validated once; a :class:`ConfigError` names the layer."""
    try:
        config = PipelineConfig.model_validate(merge_layers(layers))
    except ValidationError as error:
        raise ConfigError(_describe(error, layers)) from None
    return LayeredConfig(config, tuple(layers))


def override(config: PipelineConfig, values: Mapping[str, Any], label: str) -> PipelineConfig:
    """``config`` with ``values`` (a partial mapping of sections) over it, validated."""
    base = ConfigLayer("config", "the config", config.model_dump(mode="json"))
    return layered_config([base, ConfigLayer("flag", label, values)]).config


def _describe(error: ValidationError, layers: Sequence[ConfigLayer]) -> str:
    """``label: key: message; key: message; other label: ...``, one label per run of errors."""
    parts: list[str] = []
    previous = None
    for item in error.errors():
        label = _blamed(tuple(str(part) for part in item["loc"]), layers)
        text = describe_error_item(item)
        parts.append(text if label == previous else f"{label}: {text}")
        previous = label
    return "; ".join(parts)


def _blamed(loc: tuple[str, ...], layers: Sequence[ConfigLayer]) -> str:
    """The layer that gave the value at ``loc``; for a check across a section's fields,
    every layer that set some of them (top first)."""
    if len(loc) >= 2:
        for layer in reversed(layers):
            if layer.has(f"{loc[0]}.{loc[1]}"):
                return layer.label
    section = loc[0] if loc else ""
    naming = [layer for layer in reversed(layers) if layer.has(section)]
    if naming and not isinstance(naming[0].values[section], Mapping):
        return naming[0].label  # a value, not a section: the top layer's is the one in use
    return " over ".join(layer.label for layer in naming) or "the defaults"
