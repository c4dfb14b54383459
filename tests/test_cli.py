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


def test_bad_config_file_is_a_one_line_error(tmp_path, capsys, prefect_harness):
    config = tmp_path / "bad.yaml"
    config.write_text("seeds:\n  fg_threshold: 0.1\n  bg_threshold: 0.5\n")
    code = main(["run", "--workspace", str(tmp_path), "--config", str(config)])
    assert code == 1
    assert "fg_threshold must be greater than bg_threshold" in capsys.readouterr().err
