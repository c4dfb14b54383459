"""`wsss ingest`: a summary of images ok, quarantined by reason, classes with counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from wsss_cli.main import main
from wsss_core.data.manifest import read_manifest
from wsss_core.store.workspace import Workspace


def test_ingest_folder_prints_the_summary(tmp_path: Path, capsys, prefect_harness):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    for name in ("a", "b"):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "images" / f"{name}.jpg")
    (root / "images" / "c.jpg").write_bytes(b"")
    (root / "labels.csv").write_text("image_id,labels\na,cat|dog\nb,dog\nc,dog\nd,cat\n")
    workspace = tmp_path / "ws"
    code = main(["ingest", "folder", str(root), "--workspace", str(workspace), "--separator", "|"])
    out = capsys.readouterr().out
    assert code == 0
    assert "images ok: 2 (new 2," in out
    assert "quarantined: 2" in out and "  empty file: 1" in out and "  missing file: 1" in out
    assert "classes (2, names found, sorted): cat=1, dog=2" in out
    assert read_manifest(Workspace(workspace)).class_names == ("cat", "dog")


def test_ingest_without_path_is_a_usage_error(tmp_path: Path, capsys):
    code = main(["ingest", "voc", "--workspace", str(tmp_path / "ws")])
    assert code == 2
    assert (
        capsys.readouterr().err.strip()
        == "wsss ingest: usage error: PATH is required for a voc source"
    )


def test_bad_config_file_with_database_dir_is_one_line_naming_it(tmp_path: Path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("review:\n  port: 0\n")
    workspace, database = str(tmp_path / "ws"), str(tmp_path / "db")
    argv = ["ingest", "fiftyone", "name", "--workspace", workspace, "--database-dir", database]
    code = main([*argv, "--config", str(config)])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"wsss ingest: usage error: {config}: review.port: "
        "Input should be greater than or equal to 1 (got 0)"
    )


def test_unknown_source_is_a_usage_error(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "kitti", "x", "--workspace", str(tmp_path)])
    assert exit_info.value.code == 2
