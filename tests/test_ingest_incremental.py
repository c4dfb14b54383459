"""Re-ingesting a changed folder: rows appended, never moved or duplicated; removals marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from folder_ingest import ingest_folder
from PIL import Image

import wsss_core.stages.ingest_stage as ingest_stage
from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import MANIFEST_SCHEMA, read_manifest, read_quarantine
from wsss_core.data.sources import IngestOptions
from wsss_core.stages.common import expected_lineage, input_hashes, plan_rewrite, records_hash
from wsss_core.store.maps import LabelRecord, write_label_shard
from wsss_core.store.parquet_io import write_table
from wsss_core.store.workspace import Workspace


def _write(root: Path, labels: dict[str, str], colours: dict[str, int]) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for image_id, value in colours.items():
        Image.new("RGB", (12, 8), (value, 50, 50)).save(root / "images" / f"{image_id}.png")
    rows = "".join(f"{image_id},{names}\n" for image_id, names in labels.items())
    (root / "labels.csv").write_text("image_id,labels\n" + rows)


def _ingest(root: Path, workspace: Workspace, **options):
    return ingest_folder(
        root / "images", root / "labels.csv", workspace, options=IngestOptions(**options)
    )


@pytest.fixture
def grown(tmp_path: Path):
    """A 4-image folder ingested once, then grown by 2, one image edited, one deleted."""
    root, workspace = tmp_path / "data", Workspace(tmp_path / "ws")
    _write(root, {"a": "cat", "b": "dog", "c": "cat", "d": "dog"}, {"a": 1, "b": 2, "c": 3, "d": 4})
    first = _ingest(root, workspace)
    before = read_manifest(workspace)
    for image_id in ("b", "d"):  # final masks a crf stage would have written
        workspace.mask_path(image_id).parent.mkdir(parents=True, exist_ok=True)
        workspace.mask_path(image_id).write_bytes(b"png")
    (root / "images" / "d.png").unlink()
    _write(
        root,
        {"a": "cat", "b": "dog", "c": "cat;dog", "e": "cat", "f": "dog"},
        {"b": 99, "e": 5, "f": 6},  # b's pixels change; e, f are new
    )
    second = _ingest(root, workspace)
    return workspace, before, read_manifest(workspace), first, second


def test_new_images_are_appended_and_nothing_is_duplicated(grown):
    _, before, after, first, second = grown
    assert [r.image_id for r in before.all_rows] == ["a", "b", "c", "d"]
    assert [r.image_id for r in after.all_rows] == ["a", "b", "c", "d", "e", "f"]
    assert first.new == 4
    assert (second.new, second.changed, second.relabelled, second.unchanged) == (2, 1, 1, 1)
    assert second.removed == 1


def test_removed_files_are_marked_not_dropped(grown):
    workspace, _, after, _, second = grown
    rows = {r.image_id: r for r in after.all_rows}
    assert rows["d"].status == "removed" and rows["d"].labels == (1,)
    assert "d" not in after.by_id() and len(after) == 5
    assert any("removed" in line for line in second.lines())
    assert list(read_quarantine(workspace)) == []  # listed nowhere: not a quarantine case


def test_shards_keep_their_images_and_only_the_changed_one_is_invalidated(grown):
    _, before, after, _, _ = grown
    old, new = before.shards(2), after.shards(2)
    assert [[r.image_id for r in shard] for shard in new] == [["a", "b"], ["c"], ["e", "f"]]
    assert new[0][0] == old[0][0]  # a: untouched
    assert new[0][1].sha256 != old[0][1].sha256  # b: new pixels
    assert records_hash(new[0]) != records_hash(old[0])  # shard 0 recomputes (b changed)
    assert records_hash(new[1]) != records_hash(old[1])  # shard 1: c relabelled, d removed


def test_a_changed_or_removed_image_loses_its_final_mask(grown):
    workspace, *_ = grown
    assert not workspace.mask_path("b").exists()
    assert not workspace.mask_path("d").exists()


class _Killed(Exception):
    """Stands in for a kill between the manifest write and the mask removal."""


def test_a_kill_before_mask_removal_is_harmless(tmp_path: Path, monkeypatch):
    """The manifest is written first; what the kill left behind is rewritten or swept."""
    root, workspace = tmp_path / "data", Workspace(tmp_path / "ws")
    _write(root, {"a": "cat", "b": "dog", "d": "dog"}, {"a": 1, "b": 2, "d": 4})
    _ingest(root, workspace)
    config, model, old = PipelineConfig(), "m" * 16, read_manifest(workspace).records
    maps = [LabelRecord(r.image_id, np.zeros((r.height, r.width), np.uint8), None) for r in old]
    crf = workspace.shard_path("crf", 0)  # the crf shard (and masks) of the first ingest
    write_label_shard(
        crf, "crf", maps, expected_lineage(config, "crf", model, old), input_hashes(old)
    )
    for image_id in ("b", "d"):
        workspace.mask_path(image_id).parent.mkdir(parents=True, exist_ok=True)
        workspace.mask_path(image_id).write_bytes(b"png")
    (root / "images" / "d.png").unlink()
    _write(root, {"a": "cat", "b": "dog"}, {"b": 99})  # b changes, d is removed

    def killed(*_args) -> None:
        raise _Killed

    monkeypatch.setattr(ingest_stage, "_remove_outdated_masks", killed)
    with pytest.raises(_Killed):
        _ingest(root, workspace)
    new = read_manifest(workspace).records
    assert [r.image_id for r in new] == ["a", "b"] and new[1].sha256 != old[1].sha256
    assert workspace.mask_path("b").exists() and workspace.mask_path("d").exists()
    # b's input hash changed, so the crf stage computes it (and writes its mask) again.
    plan = plan_rewrite(crf, expected_lineage(config, "crf", model, new), new, "crf", 0)
    assert [r.image_id for r in plan.todo] == ["b"]
    monkeypatch.undo()
    _ingest(root, workspace)  # finds nothing changed, and sweeps the removed image's mask
    assert not workspace.mask_path("d").exists()


def test_reingesting_an_unchanged_folder_changes_nothing(tmp_path: Path):
    root, workspace = tmp_path / "data", Workspace(tmp_path / "ws")
    _write(root, {"a": "cat", "b": "dog"}, {"a": 1, "b": 2})
    _ingest(root, workspace)
    first = read_manifest(workspace)
    summary = _ingest(root, workspace)
    second = read_manifest(workspace)
    assert second.all_rows == first.all_rows and second.content_hash == first.content_hash
    assert (summary.new, summary.changed, summary.unchanged) == (0, 0, 2)


def test_a_file_that_comes_back_is_restored_in_place(tmp_path: Path):
    root, workspace = tmp_path / "data", Workspace(tmp_path / "ws")
    _write(root, {"a": "cat", "b": "dog", "c": "cat"}, {"a": 1, "b": 2, "c": 3})
    _ingest(root, workspace)
    (root / "images" / "b.png").rename(tmp_path / "b.png")
    _ingest(root, workspace)
    rows = {r.image_id: r for r in read_manifest(workspace).all_rows}
    assert rows["b"].status == "quarantined"  # still listed, file missing
    assert next(read_quarantine(workspace)).reason.startswith("missing file")
    (tmp_path / "b.png").rename(root / "images" / "b.png")
    summary = _ingest(root, workspace)
    manifest = read_manifest(workspace)
    assert [r.image_id for r in manifest.all_rows] == ["a", "b", "c"]
    assert manifest.by_id()["b"].status == "ok" and summary.restored == 1


def test_newly_found_classes_are_appended_without_renumbering(tmp_path: Path):
    root, workspace = tmp_path / "data", Workspace(tmp_path / "ws")
    _write(root, {"a": "dog", "b": "zebra"}, {"a": 1, "b": 2})
    _ingest(root, workspace)
    _write(root, {"a": "dog", "b": "zebra", "c": "cat"}, {"c": 3})
    _ingest(root, workspace)
    manifest = read_manifest(workspace)
    assert manifest.class_names == ("dog", "zebra", "cat")
    assert [r.labels for r in manifest.records] == [(0,), (1,), (2,)]


def test_another_source_kind_needs_replace(tmp_path: Path):
    root, workspace = tmp_path / "data", Workspace(tmp_path / "ws")
    _write(root, {"a": "dog"}, {"a": 1})
    _ingest(root, workspace)
    with pytest.raises(ValueError, match="--replace"):
        ingest_folder(root / "images", root / "labels.csv", workspace, source_kind="demo")
    ingest_folder(
        root / "images",
        root / "labels.csv",
        workspace,
        source_kind="demo",
        options=IngestOptions(replace=True),
    )
    assert read_manifest(workspace).source["kind"] == "demo"


def test_version_1_manifests_still_read(tmp_path: Path):
    workspace = Workspace(tmp_path / "ws")
    v1 = pa.schema([f for f in MANIFEST_SCHEMA if f.name != "status"])
    rows = [
        {"image_id": i, "uri": f"/x/{i}.png", "width": 4, "height": 3, "labels": labels,
         "split": "train", "sha256": "0" * 64, "gt_uri": None}
        for i, labels in (("a", [0]), ("b", []))
    ]  # fmt: skip
    meta = {"schema_version": 1, "class_names": ["cat"], "source": {}, "content_hash": "h"}
    write_table(workspace.manifest_path, pa.Table.from_pylist(rows, schema=v1), meta)
    manifest = read_manifest(workspace)
    assert [r.status for r in manifest.records] == ["ok", "unlabeled"]
    assert manifest.shards(1) == [(manifest.records[0],), (manifest.records[1],)]
