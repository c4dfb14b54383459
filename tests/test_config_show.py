"""`wsss config show`: commented YAML that loads back into the same configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsss_cli.main import main
from wsss_core.config import PipelineConfig
from wsss_core.config_yaml import LINE_LENGTH, commented_yaml

NON_DEFAULT = {
    "device": "cuda:1",
    "shard_size": 64,
    "train": {"weights": None, "epochs": 3, "crop_scale": [0.5, 0.9], "learning_rate": 2.5e-5},
    "cam": {"scales": [1.0, 0.75], "method": "gradcam"},
    "crf": {"min_confidence": 0.25},
    "review": {
        "dataset_name": "yes",  # YAML 1.1 would read it as a boolean unless quoted
        "database_uri": "mongodb://host:27017/?serverSelectionTimeoutMS=500 # not a comment",
        "port": 6000,
    },
}


def _round_trip(config: PipelineConfig) -> PipelineConfig:
    return PipelineConfig.model_validate(yaml.safe_load(commented_yaml(config)))


def test_defaults_round_trip():
    assert _round_trip(PipelineConfig()) == PipelineConfig()


def test_a_non_default_config_round_trips():
    config = PipelineConfig.model_validate(NON_DEFAULT)
    assert config.cam.scales == (1.0, 0.75) and config.train.weights is None
    assert _round_trip(config) == config


@pytest.mark.parametrize("value", ["a\nb", "tab\there", "", "null", "1.0", "- x", "[x]", "é"])
def test_awkward_strings_round_trip(value: str):
    config = PipelineConfig.model_validate({"review": {"dataset_name": value}})
    assert _round_trip(config) == config


def test_sections_and_fields_are_described():
    text = commented_yaml(PipelineConfig())
    lines = text.splitlines()
    crf = lines.index("crf:")
    assert lines[crf - 1] == "# Dense CRF refinement (pydensecrf) into the final masks."
    assert "shard_size: 256  # images per map shard" in lines
    # Only a docstring's first paragraph: the train section's second one stays out.
    assert "resolve_train_config" not in text
    long = lines.index("  database_uri: null")  # a description too long to trail the value
    assert lines[long - 1].startswith("  # ") and lines[long - 2].startswith("  # an external")


def test_comment_lines_stay_short():
    for config in (PipelineConfig(), PipelineConfig.model_validate(NON_DEFAULT)):
        for line in commented_yaml(config).splitlines():
            if line.lstrip().startswith("#"):
                assert len(line) <= LINE_LENGTH, line


def test_overridden_fields_name_their_default():
    lines = commented_yaml(PipelineConfig.model_validate(NON_DEFAULT)).splitlines()
    assert "shard_size: 64  # images per map shard (default: 256)" in lines
    scales = lines.index("  scales: [1.0, 0.75]")  # described, so its comment is above it
    assert lines[scales - 1].endswith("(default: [1.0, 0.5, 0.75, 1.5])")


def test_cli_config_show_prints_the_effective_config(tmp_path: Path, capsys):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(NON_DEFAULT))
    assert main(["config", "show", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# wsss configuration: {config_file} over the defaults\n")
    shown = PipelineConfig.model_validate(yaml.safe_load(out))
    assert shown == PipelineConfig.from_yaml(config_file)


def test_cli_config_without_action_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["config"])
    assert exit_info.value.code == 2
    assert "ACTION" in capsys.readouterr().err
