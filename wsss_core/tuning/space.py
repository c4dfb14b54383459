"""What `wsss tune` searches: small joint grids, one stage at a time, in pipeline order.

Each grid holds a few settings that act together (a CRF kernel's width and
weight) and is searched with the earlier grids' winners fixed, so the maps of
the stages above are computed once and reused (a CRF setting never
recomputes CAMs). The current value of every key is always a candidate, so
"change nothing" competes with every change.

Why these settings: the CAMs (method, scales, flips) feed every mask; on the
development datasets the final mIoU moved most with the background model and
the CRF kernels (ARCHITECTURE.md, "Thresholds"); the seed and growing
thresholds decide the grown regions the crf stage restores vanished classes
from. ``cam.threshold`` shapes only the thresholded-CAM masks (the ``cam``
row of ``wsss eval``), so it is tuned on those. With self-training on, the
last grid weighs the head against the first pass (or drops it); which heads
score each grid is ``stages/tune.py``'s part.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from wsss_core.config import PipelineConfig

CAM_STAGE = "cam"
FINAL_STAGE = "crf"


@dataclass(frozen=True)
class Grid:
    """Joint candidate values of a few dotted keys, scored on one stage's maps."""

    name: str
    keys: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]  # each: one value per key
    scored_stage: str = FINAL_STAGE
    needs_affinity: bool = False  # only searched when the affinity stage is on
    needs_self_training: bool = False  # only searched when a self-training head exists

    def candidates(self, config: PipelineConfig) -> Iterator[dict[str, Any]]:
        """Every valid setting of the grid over ``config``, the current one first."""
        current = tuple(get_value(config, key) for key in self.keys)
        seen = set()
        for values in (current, *self.values):
            frozen = tuple(_hashable(v) for v in values)
            if frozen in seen:
                continue
            seen.add(frozen)
            changes = dict(zip(self.keys, values, strict=True))
            if with_changes(config, changes) is not None:
                yield changes


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _product(*axes: Sequence[Any]) -> tuple[tuple[Any, ...], ...]:
    return tuple(itertools.product(*axes))


SEARCH_SPACE: tuple[Grid, ...] = (
    # The CAMs first: every later grid builds on them (each candidate costs a cam pass).
    Grid("cam method", ("cam.method",), _product(("cam", "gradcampp"))),
    Grid(
        "cam scales",
        ("cam.scales", "cam.flip"),
        # 0.75 widens the CAM over objects large in the frame (scenes at 256 px: first-pass
        # mIoU +0.025 on 200 images) and over a digit's background (-0.027); with the heads
        # the final masks gained on both, so it is in the default since 2026-12-08.
        _product(
            ((1.0,), (1.0, 0.5, 1.5), (1.0, 0.5, 0.75, 1.5), (1.0, 0.5, 1.5, 2.0)), (False, True)
        ),
    ),
    Grid("cam threshold", ("cam.threshold",), _product((0.3, 0.4, 0.5, 0.6, 0.7)), CAM_STAGE),
    Grid(
        "background powers",
        ("crf.background_powers", "crf.background_score"),
        # The score ranks a set's candidates (a single power needs none): the default set
        # is tried with both, the others with the default score; one more candidate only.
        (
            ((0.5, 0.7, 1.0, 1.4), "edge"),
            *_product(
                ((0.5, 0.7, 1.0, 1.4), (0.5,), (0.7,), (1.0,), (1.4,), (2.0,), (0.5, 1.0, 2.0)),
                ("class_outlines",),
            ),
        ),
    ),
    Grid(
        "appearance kernel",
        ("crf.bilateral_srgb", "crf.bilateral_sxy"),
        _product((7.0, 13.0, 25.0), (30.0, 50.0, 80.0)),
    ),
    Grid(
        "kernel weights",
        ("crf.bilateral_compat", "crf.gaussian_compat"),
        _product((5.0, 10.0, 15.0), (1.0, 3.0)),
    ),
    Grid(
        "seed thresholds",
        ("seeds.fg_threshold", "seeds.bg_threshold"),
        _product((0.8, 0.9), (0.2, 0.3)),
    ),
    Grid(
        "growing",
        ("grow.background_power", "grow.fg_threshold"),
        _product((0.5, 1.0, 2.0), (0.5, 0.6, 0.7)),
    ),
    Grid("class recovery", ("crf.min_kept_share",), _product((0.0, 0.05, 0.1, 0.2, 0.3))),
    Grid(
        "affinity walk",
        ("affinity.beta", "affinity.steps"),
        _product((10.0, 20.0, 30.0), (16, 32, 64)),
        needs_affinity=True,
    ),
    # Last, as in the crf stage: how much the head counts, or no head at all.
    Grid(
        "self-training mix",
        ("self_training.enabled", "self_training.head_weight"),
        ((True, 0.4), (True, 0.5), (True, 0.6), (True, 0.7), (True, 0.8), (False, 0.6)),
        needs_self_training=True,
    ),
)


def get_value(config: PipelineConfig, key: str) -> Any:
    section, field = key.split(".")
    value = getattr(getattr(config, section), field)
    return list(value) if isinstance(value, tuple) else value


def with_changes(config: PipelineConfig, changes: Mapping[str, Any]) -> PipelineConfig | None:
    """``config`` with dotted-key ``changes``, validated; None when they break a bound."""
    data = config.model_dump(mode="json")
    for key, value in changes.items():
        section, field = key.split(".")
        data[section][field] = list(value) if isinstance(value, tuple) else value
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError:
        return None


def grids_for(config: PipelineConfig) -> tuple[Grid, ...]:
    """The grids that apply: a stage's own grid only while ``config`` has it on."""
    return tuple(
        grid
        for grid in SEARCH_SPACE
        if (config.affinity.enabled or not grid.needs_affinity)
        and (config.self_training.enabled or not grid.needs_self_training)
    )
