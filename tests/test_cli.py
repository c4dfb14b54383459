"""The `wsss` command: help, usage errors (exit 2) and one-line failures (exit 1)."""

from __future__ import annotations

import pytest

from wsss_cli.main import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "run", "review"):
        assert command in out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run"])  # --workspace missing
    assert exit_info.value.code == 2
    assert "--workspace" in capsys.readouterr().err


def test_run_on_a_workspace_without_manifest_is_a_one_line_error(tmp_path, capsys, prefect_harness):
    code = main(["run", "--workspace", str(tmp_path / "nothing-here"), "--no-publish"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("wsss run: error:")
    assert "ingest data first" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_bad_config_file_is_a_one_line_usage_error(tmp_path, capsys, prefect_harness):
    config = tmp_path / "bad.yaml"
    config.write_text("seeds:\n  fg_threshold: 0.1\n  bg_threshold: 0.5\n")
    code = main(["run", "--workspace", str(tmp_path), "--config", str(config)])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"wsss run: usage error: {config}: seeds: fg_threshold must be greater than bg_threshold"
    )


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["ingest", "folder", "data", "--workers", "0"], "--workers"),
        (["ingest", "folder", "data", "--max-pixels", "0"], "--max-pixels"),
        (["ingest", "folder", "data", "--separator", ""], "--separator"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--image-size", "16"], "--image-size"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--device", "bogus"], "--device"),
        (["review", "--port", "0"], "--port"),
        (["review", "sync", "--port", "65536"], "--port"),
        (["run", "--workers", "0"], "--workers"),
        (["label", "--workers", "0"], "--workers"),
        (["demo", "--runner", "dask", "--workers", "0"], "--workers"),
    ],
)
def test_bad_option_value_is_a_one_line_usage_error(argv, flag, tmp_path, capsys):
    workspace = tmp_path / "ws"
    code = main([*argv, "--workspace", str(workspace)])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"wsss {argv[0]}: usage error: {flag}: ")
    assert not workspace.exists()  # refused before any work


def test_unreadable_config_is_one_line_naming_the_file(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("train: [1\n  bad: :\n")  # YAML's own message spans lines
    assert main(["config", "show", "--config", str(config)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"wsss config: usage error: {config}: cannot read config")
