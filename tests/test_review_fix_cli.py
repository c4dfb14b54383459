"""`wsss review fix` without Label Studio: it says what is missing and how to get it."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
import yaml
from folder_ingest import ingest_folder
from PIL import Image

from wsss_core.review.reviews import (
    Correction,
    latest_reviews,
    read_reviews,
    record_corrections,
    reviews_path,
)
from wsss_core.store.parquet_io import write_table
from wsss_core.store.workspace import Workspace

SECRET = "s3cret-api-key-0123456789"


def _main(*args: str) -> int:
    from wsss_cli.main import main

    return main(list(args))


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(images / f"{name}.png")
    (tmp_path / "labels.csv").write_text("image_id,labels\na,cat\nb,dog\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    workspace = Workspace(tmp_path / "ws")
    ingest_folder(images, tmp_path / "labels.csv", workspace, tmp_path / "classes.txt")
    return workspace


def _fix(workspace: Workspace, review: dict, *extra: str) -> int:
    config = workspace.root.parent / "fix.yaml"
    config.write_text(yaml.safe_dump({"review": review}))
    return _main(
        "review", "fix", "--workspace", str(workspace.root), "--config", str(config), *extra
    )


def test_a_missing_configured_command_is_named(workspace, capsys):
    assert _fix(workspace, {"labelstudio_command": "/nowhere/label-studio"}) == 1
    error = capsys.readouterr().err
    assert "review.labelstudio_command /nowhere/label-studio does not exist" in error


def test_without_label_studio_it_says_how_to_get_it(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert _fix(workspace, {}) == 1
    assert "make labelstudio" in capsys.readouterr().err


def test_an_existing_server_needs_its_key_in_the_environment(workspace, monkeypatch, capsys):
    review = {"labelstudio_url": "http://127.0.0.1:9", "labelstudio_api_key_env": "MY_LS_KEY"}
    monkeypatch.delenv("MY_LS_KEY", raising=False)
    assert _fix(workspace, review) == 1
    assert "environment variable MY_LS_KEY" in capsys.readouterr().err

    monkeypatch.setenv("MY_LS_KEY", SECRET)
    assert _fix(workspace, review, "--pull") == 1  # nothing listens on port 9
    out, err = capsys.readouterr()
    assert "does not answer" in err
    assert SECRET not in out + err
    stored = [p.read_bytes() for p in workspace.root.rglob("*") if p.is_file()]
    assert not any(SECRET.encode() in content for content in stored)


def test_a_workspace_without_a_manifest_is_refused(tmp_path, capsys):
    assert _main("review", "fix", "--workspace", str(tmp_path / "none")) == 1
    assert "no manifest" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_stop_without_a_server_says_so(workspace, capsys):
    assert _main("review", "fix", "--workspace", str(workspace.root), "--stop") == 0
    assert "no Label Studio running" in capsys.readouterr().out


def test_a_reviews_table_from_before_corrections_reads_without_them(workspace):
    when = datetime(2026, 11, 1, tzinfo=UTC)
    version_1 = pa.schema(
        [
            ("image_id", pa.string()),
            ("status", pa.string()),
            ("labels", pa.list_(pa.int16())),
            ("mask_sha256", pa.string()),
            ("reviewed_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    row = {"image_id": "a", "status": "needs-fix", "labels": [1], "mask_sha256": None}
    table = pa.Table.from_pylist([{**row, "reviewed_at": when}], schema=version_1)
    write_table(reviews_path(workspace), table, {"schema_version": 1})
    assert read_reviews(workspace)[0].correction is None

    correction = Correction("c" * 64, "b" * 64, "a" * 64, "reviewer@example.org", when, "task 1")
    assert record_corrections(workspace, {"a": correction}) == 1
    latest = latest_reviews(workspace)["a"]
    assert (latest.status, latest.labels, latest.correction) == ("needs-fix", (1,), correction)
    assert len(read_reviews(workspace)) == 2  # the old row is kept


def test_the_fix_options_are_documented(capsys):
    with pytest.raises(SystemExit):
        _main("review", "--help")
    help_text = capsys.readouterr().out
    for option in ("fix", "--view", "--pull", "--stop", "needs-fix"):
        assert option in help_text


def test_an_image_in_two_tasks_takes_its_newest_saved_annotation():
    from wsss_core.review.mask_fixing import _newest_annotations

    def task(task_id, image_id, *annotations):
        return {"id": task_id, "data": {"image_id": image_id}, "annotations": list(annotations)}

    older = {"id": 7, "updated_at": "2026-12-01T10:00:00Z"}
    newer = {"id": 3, "updated_at": "2026-12-01T11:00:00Z"}
    skipped = {"id": 9, "updated_at": "2026-12-01T12:00:00Z", "was_cancelled": True}
    exported = [task(1, "a", older, skipped), task(2, "a", newer), task(4, "b")]
    exported.append(task(5, "c", older))
    newest = _newest_annotations(exported)
    assert {i: (t["id"], a["id"]) for i, (t, a) in newest.items()} == {"a": (2, 3), "c": (5, 7)}


def test_a_rejection_takes_a_corrected_mask_out_of_every_use(workspace):
    from wsss_core.review.corrections import CORRECTED_MASK, reviewer_masks, write_version
    from wsss_core.review.reviews import ObservedReview, record_reviews

    painted = np.zeros((8, 8), np.uint8)
    painted[2:6, 2:6] = 1
    sha256 = write_version(workspace, "a", painted)
    when = datetime(2026, 11, 1, tzinfo=UTC)
    record_corrections(workspace, {"a": Correction(sha256, "", "", "me", when, "task 1")})
    assert reviewer_masks(workspace)["a"].source == CORRECTED_MASK

    record_reviews(workspace, {"a": ObservedReview(frozenset({"rejected"}), (0,), (0,))})
    assert latest_reviews(workspace)["a"].correction.sha256 == sha256  # kept on record
    assert "a" not in reviewer_masks(workspace)  # but neither exported nor a true mask
