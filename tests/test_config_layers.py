"""Layered config: defaults < the workspace's saved config < --config FILE < flags.

A file's keys win, the keys it does not name keep the saved values;
``--from-defaults`` leaves the saved config out; ``wsss config show`` marks
where each value came from.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsss_cli.main import main
from wsss_core.config import ConfigError, PipelineConfig
from wsss_core.config_layers import ConfigLayer, layered_config, merge_layers
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import (
    flow_config,
    layered_workspace_config,
    load_workspace_config,
    save_workspace_config,
)

SAVED = {"shard_size": 64, "crf": {"bilateral_srgb": 5.0, "iterations": 4}, "seeds": {}}
FILE = {"crf": {"iterations": 7}, "cam": {"flip": True}}


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A workspace whose saved config names a few keys (as one edited by hand would)."""
    workspace = Workspace(tmp_path / "ws")
    workspace.root.mkdir()
    workspace.config_path.write_text(yaml.safe_dump(SAVED))
    return workspace


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(FILE))
    return path


def test_a_files_keys_win_and_the_saved_rest_is_kept(workspace, config_file):
    config = load_workspace_config(workspace, config_file)
    assert config.crf.iterations == 7 and config.cam.flip  # the file's
    assert config.crf.bilateral_srgb == 5.0 and config.shard_size == 64  # kept from the saved
    assert config.train == PipelineConfig().train  # named by neither: the default


def test_from_defaults_leaves_the_saved_config_out(workspace, config_file):
    config = load_workspace_config(workspace, config_file, from_defaults=True)
    assert config == PipelineConfig.model_validate(FILE)
    assert load_workspace_config(workspace, None, from_defaults=True) == PipelineConfig()
    assert load_workspace_config(workspace, None) == PipelineConfig.model_validate(SAVED)


def test_flags_are_the_top_layer(workspace, config_file):
    layered = layered_workspace_config(workspace, config_file, flags={"crf": {"iterations": 2}})
    assert layered.config.crf.iterations == 2 and layered.config.crf.bilateral_srgb == 5.0
    assert layered.source_of("crf.iterations") == "flag"
    assert layered.source_of("cam.flip") == "file"
    assert layered.source_of("crf.bilateral_srgb") == "saved"
    assert layered.source_of("grow.fg_threshold") == "default"


def test_a_value_that_is_not_a_section_replaces_what_was_below():
    lower = ConfigLayer("saved", "a", {"device": "cpu", "crf": {"iterations": 3}})
    upper = ConfigLayer("file", "b", {"device": "cuda", "crf": {"min_kept_share": 0.2}})
    assert merge_layers([lower, upper]) == {
        "device": "cuda",
        "crf": {"iterations": 3, "min_kept_share": 0.2},
    }


def test_an_error_names_the_layer_that_gave_the_bad_key(workspace, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("crf:\n  bilateral_srgb: 0\n")
    with pytest.raises(ConfigError) as error:
        load_workspace_config(workspace, bad)
    assert str(error.value) == f"{bad}: crf.bilateral_srgb: Input should be greater than 0 (got 0)"
    # A bad key in the saved config names the saved file, even under a good --config.
    workspace.config_path.write_text("review:\n  port: 0\n")
    with pytest.raises(ConfigError, match=f"^{workspace.config_path}: review.port: "):
        load_workspace_config(workspace, None)


def test_a_check_across_layers_names_each_layer_that_set_the_section():
    saved = ConfigLayer("saved", "saved.yaml", {"seeds": {"fg_threshold": 0.4}})
    given = ConfigLayer("file", "my.yaml", {"seeds": {"bg_threshold": 0.5}})
    with pytest.raises(ConfigError) as error:
        layered_config([saved, given])
    assert str(error.value) == (
        "my.yaml over saved.yaml: seeds: fg_threshold must be greater than bg_threshold"
    )


def test_a_flow_takes_a_config_or_a_file_not_both(workspace, config_file):
    config = PipelineConfig(shard_size=8)
    assert flow_config(workspace, None, config) is config
    assert flow_config(workspace, str(config_file), None).crf.iterations == 7
    with pytest.raises(ConfigError, match="not both"):
        flow_config(workspace, str(config_file), config)


def test_config_show_marks_where_each_value_comes_from(workspace, config_file, capsys):
    argv = ["config", "show", "--workspace", str(workspace.root), "--config", str(config_file)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == (
        f"# wsss configuration: {config_file} over {workspace.config_path} over the defaults"
    )
    assert lines[1] == (
        "# [file]: --config FILE; [saved]: WS/config.yaml, saved by the last run; "
        "[default]: built in"
    )
    assert "shard_size: 64  # [saved] images per map shard (default: 256)" in lines
    assert "  iterations: 7  # [file] mean-field iterations (default: 10)" in lines
    assert "  bilateral_srgb: 5.0  # [saved] appearance kernel colour width (0-255 levels) " in (
        out.replace("(default: 13.0)", "")
    )
    assert "  flip: true  # [file] add horizontally flipped passes (IRN) (default: false)" in lines
    assert "  fg_threshold: 0.9  # [default]" in lines  # seeds: named by neither
    shown = PipelineConfig.model_validate(yaml.safe_load(out))  # still a valid config file
    assert shown == load_workspace_config(workspace, config_file)


def test_config_show_from_defaults_and_without_a_workspace(workspace, config_file, capsys):
    argv = ["config", "show", "--workspace", str(workspace.root), "--from-defaults"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("# wsss configuration: the defaults\n# [default]: built in\n")
    assert "shard_size: 256  # [default] images per map shard" in out.splitlines()
    assert main(["config", "show", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "  iterations: 7  # [file] mean-field iterations (default: 10)" in out.splitlines()
    assert "[saved]" not in out


def test_a_saved_config_is_a_full_layer(workspace):
    """What a run saves names every key: the next command reads it all back as [saved]."""
    save_workspace_config(workspace, PipelineConfig(shard_size=32), "test run")
    layered = layered_workspace_config(workspace)
    assert layered.config == PipelineConfig(shard_size=32)
    assert set(layered.sources().values()) == {"saved"}
