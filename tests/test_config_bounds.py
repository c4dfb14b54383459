"""One definition per setting: defaults shared by library and pipeline, bounds enforced at load.

Every bound is taken from the pydantic fields themselves, so a bound added to
``wsss_core/config.py`` is tested without touching this file, and a numeric
setting added without one fails here.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path

import annotated_types
import pytest
import yaml
from pydantic import BaseModel

from wsss_cli.main import main
from wsss_core.config import (
    BACKBONE_NAMES,
    DEMO_CANVAS_SIDES,
    ConfigError,
    CrfConfig,
    CrfParams,
    DemoConfig,
    PipelineConfig,
    load_config,
)

NUMBERS = (int, float)


def _is_section(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _settings():
    """(dotted key, section, field name, FieldInfo) of every setting; section None: top level."""
    for name, field in PipelineConfig.model_fields.items():
        if not _is_section(field.annotation):
            yield name, None, name, field
            continue
        for setting, info in field.annotation.model_fields.items():
            yield f"{name}.{setting}", name, setting, info


def _number_type(annotation) -> type | None:
    """int or float for a scalar numeric field (optional ones too), else None."""
    if annotation in NUMBERS:
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(kinds) == 1 and kinds[0] in NUMBERS:
            return kinds[0]
    return None


def _violations():
    """One out-of-bounds value per bound: (key, section, field, value, words naming the bound)."""
    for key, section, name, field in _settings():
        kind = _number_type(field.annotation)
        if kind is None:
            continue
        step = 1 if kind is int else 0.25
        for bound in field.metadata:
            if isinstance(bound, annotated_types.Gt):
                yield key, section, name, kind(bound.gt), f"greater than {bound.gt}"
            elif isinstance(bound, annotated_types.Ge):
                yield key, section, name, bound.ge - step, f"greater than or equal to {bound.ge}"
            elif isinstance(bound, annotated_types.Lt):
                yield key, section, name, kind(bound.lt), f"less than {bound.lt}"
            elif isinstance(bound, annotated_types.Le):
                yield key, section, name, bound.le + step, f"less than or equal to {bound.le}"


VIOLATIONS = list(_violations())

# Settings that are not plain numbers, and checks across fields: the value and the words.
OTHER_VIOLATIONS = [
    ("device", None, "device", "gpu", "should match pattern"),
    ("train.backbone", "train", "backbone", "vgg16", "Input should be 'resnet18'"),
    ("train.crop_scale", "train", "crop_scale", [0.9, 0.5], "0 < low <= high <= 1"),
    ("train.multi_dilation.1", "train", "multi_dilation", [1, 0], "greater than or equal to 1"),
    ("train.multi_dilation.1", "train", "multi_dilation", [1, 65], "less than or equal to 64"),
    ("train.multi_dilation", "train", "multi_dilation", [3, 6], "must start with 1"),
    ("train.multi_dilation", "train", "multi_dilation", [1, 6, 3], "strictly increasing"),
    ("cam.scales", "cam", "scales", [], "at least 1 item"),
    ("cam.scales.1", "cam", "scales", [1.0, 0.0], "greater than 0"),
    ("crf.background_powers", "crf", "background_powers", [], "at least 1 item"),
    ("crf.background_powers.0", "crf", "background_powers", [-0.5], "greater than 0"),
    ("crf.bilateral_srgb", "crf", "bilateral_srgb", float("inf"), "finite number"),
    ("train.learning_rate", "train", "learning_rate", float("nan"), "finite number"),
    ("self_training.width", "self_training", "width", 10, "multiple of 4"),
    ("self_training.test_scales", "self_training", "test_scales", [], "at least 1 item"),
    ("self_training.test_scales.0", "self_training", "test_scales", [0.0], "greater than 0"),
]
CROSS_FIELD = [
    ("seeds", {"fg_threshold": 0.2, "bg_threshold": 0.3}, "fg_threshold must be greater"),
    ("affinity", {"fg_threshold": 0.04}, "fg_threshold must be greater"),
]


def _write(path: Path, section: str | None, name: str, value) -> Path:
    path.write_text(yaml.safe_dump({name: value} if section is None else {section: {name: value}}))
    return path


def test_the_bounds_found_cover_the_sections():
    keys = {key for key, *_ in VIOLATIONS}
    assert {"shard_size", "demo.seed", "crf.bilateral_srgb", "crf.gaussian_compat"} <= keys
    assert len(VIOLATIONS) > 40


@pytest.mark.parametrize(
    ("key", "section", "name", "value", "words"), VIOLATIONS + OTHER_VIOLATIONS, ids=str
)
def test_every_bound_is_enforced_when_the_config_loads(tmp_path, key, section, name, value, words):
    config_file = _write(tmp_path / "bad.yaml", section, name, value)
    with pytest.raises(ConfigError) as error:
        load_config(config_file)
    assert str(error.value).startswith(f"{config_file}: {key}: ")
    assert words in str(error.value)


@pytest.mark.parametrize(("section", "values", "words"), CROSS_FIELD)
def test_checks_across_fields_name_their_section(tmp_path, section, values, words):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump({section: values}))
    with pytest.raises(ConfigError, match=f"^{config_file}: {section}: {words}"):
        load_config(config_file)


def test_every_numeric_setting_carries_a_bound():
    bounds = (annotated_types.Gt, annotated_types.Ge, annotated_types.Lt, annotated_types.Le)
    unbounded = [
        key
        for key, _, _, field in _settings()
        if _number_type(field.annotation) and not any(isinstance(b, bounds) for b in field.metadata)
    ]
    assert unbounded == []
    # Lists of numbers have their element bounds checked above, one case each.
    lists = {
        key for key, _, _, field in _settings() if typing.get_origin(field.annotation) is tuple
    }
    assert lists == {
        "train.crop_scale",
        "train.multi_dilation",
        "cam.scales",
        "crf.background_powers",
        "self_training.test_scales",
    }


def test_the_library_crf_takes_the_pipelines_defaults_and_bounds():
    from wsss_core.background import refine_best_background
    from wsss_core.crf import CrfParams as LibraryParams
    from wsss_core.crf import refine_with_crf

    assert LibraryParams is CrfParams and issubclass(CrfConfig, CrfParams)
    pipeline = CrfConfig()
    for name, field in CrfParams.model_fields.items():
        assert getattr(pipeline, name) == field.default, name
        assert CrfConfig.model_fields[name].metadata == field.metadata, name
    assert (pipeline.bilateral_sxy, pipeline.bilateral_srgb, pipeline.bilateral_compat) == (
        50,
        13,
        10,
    )  # as ARCHITECTURE.md, "Thresholds", documents
    assert inspect.signature(refine_with_crf).parameters["params"].default == CrfParams()
    assert inspect.signature(refine_best_background).parameters["params"].default is None
    with pytest.raises(ValueError, match="bilateral_srgb"):
        CrfParams(bilateral_srgb=0)


@pytest.mark.parametrize("kind", sorted(DEMO_CANVAS_SIDES))
def test_the_demo_generators_take_the_demo_sections_defaults(kind):
    from wsss_core.data.demo import generate_demo_dataset
    from wsss_core.data.scenes import generate_scenes_dataset

    generate = {"digits": generate_demo_dataset, "scenes": generate_scenes_dataset}[kind]
    section = DemoConfig(kind=kind)
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(generate).parameters.items()
        if name in ("num_images", "image_size", "seed")
    }
    assert defaults == {
        "num_images": section.num_images,
        "image_size": section.canvas_side,
        "seed": section.seed,
    }
    assert section.canvas_side == DEMO_CANVAS_SIDES[kind]
    with pytest.raises(ValueError, match="seed"):
        generate(Path("unused"), seed=-1)  # the section's bound, refused before writing


def test_the_backbone_names_are_the_classifiers():
    from wsss_core.model.classifier import BACKBONES

    assert set(BACKBONES) == set(BACKBONE_NAMES)


def test_a_bad_setting_exits_2_before_any_stage_runs(tmp_path, capsys):
    """The issue's case: crf.bilateral_srgb 0 used to load and fail every crf shard."""
    from wsss_core.data.demo import generate_demo_dataset
    from wsss_core.store.workspace import Workspace

    demo = generate_demo_dataset(tmp_path / "demo", num_images=4, image_size=32, seed=2)
    workspace = Workspace(tmp_path / "ws")
    assert main(["ingest", "folder", str(demo.root), "--workspace", str(workspace.root)]) == 0
    capsys.readouterr()
    bad = _write(tmp_path / "bad.yaml", "crf", "bilateral_srgb", 0)
    code = main(["run", "--workspace", str(workspace.root), "--config", str(bad), "--no-publish"])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"wsss run: usage error: {bad}: crf.bilateral_srgb: Input should be greater than 0 (got 0)"
    )
    assert not workspace.models_dir.exists() and not workspace.config_path.exists()
    assert not any(workspace.maps_dir(stage).exists() for stage in ("cam", "crf"))
