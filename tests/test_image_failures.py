"""One bad image costs one image: it is recorded, listed and skipped, its shard completes;
errors that are not the image's (memory, disk, a bug hitting every image) fail the shard."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import yaml
from tiny_pipeline import TINY_SECTIONS, label_run

from wsss_core.config import load_config
from wsss_core.data.demo import generate_demo_dataset
from wsss_core.data.manifest import ImageRecord, read_manifest, read_quarantine
from wsss_core.data.sources import IngestOptions
from wsss_core.model.reuse import train_or_reuse
from wsss_core.stages.image_failures import (
    ImageFailure,
    ImageGuard,
    ImageReadError,
    file_stamp,
    known_failures,
    read_image,
)
from wsss_core.stages.ingest_stage import ingest
from wsss_core.stages.status import workspace_status
from wsss_core.store.maps import read_failed, stored_image_ids
from wsss_core.store.workspace import MAP_STAGES, Workspace

SHARD_SIZE = 10
CONFIG = {
    "shard_size": SHARD_SIZE,
    "device": "cpu",
    **TINY_SECTIONS,
}


def _record(path: Path, image_id: str = "img") -> ImageRecord:
    return ImageRecord(image_id, str(path), 8, 8, (0,), "train", "x")


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    return path


# --- the guard: which errors are the image's ---------------------------------------------


def test_an_unreadable_file_is_the_images_failure_and_names_the_file(tmp_path: Path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(_png(tmp_path / "good.png").read_bytes()[:20])  # truncated
    guard = ImageGuard("cam", 3)
    assert guard.run(_record(broken, "b"), read_image, _record(broken, "b")) is None
    good = guard.run(_record(tmp_path / "good.png"), read_image, _record(tmp_path / "good.png"))
    assert good.shape == (8, 8, 3)
    [failure] = guard.failures
    assert (failure.stage, failure.shard_index, failure.image_id) == ("cam", 3, "b")
    assert failure.reason.startswith(f"{broken}: ")
    assert failure.stamp == file_stamp(str(broken))


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
)
def test_errors_of_the_machine_fail_the_shard_naming_the_image(tmp_path: Path, error):
    def work():
        raise error

    with pytest.raises(type(error)) as raised:
        ImageGuard("crf", 0).run(_record(tmp_path / "a.png", "a"), work)
    assert any("a.png" in note for note in raised.value.__notes__)


def test_machine_errors_while_reading_are_not_the_images(tmp_path: Path, monkeypatch):
    import wsss_core.stages.image_failures as module

    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(module, "load_rgb", full_disk)
    with pytest.raises(OSError):
        ImageGuard("cam", 0).run(
            _record(tmp_path / "a.png"), read_image, _record(tmp_path / "a.png")
        )


def test_a_bug_hitting_every_image_fails_the_shard(tmp_path: Path):
    def bug(_):
        raise ValueError("shapes do not match")

    guard = ImageGuard("seeds", 0)
    assert guard.run(_record(tmp_path / "a.png", "a"), bug, 1) is None  # one: can't tell yet
    with pytest.raises(ValueError):
        guard.run(_record(tmp_path / "b.png", "b"), bug, 2)


def test_a_compute_error_on_one_image_among_good_ones_is_that_images(tmp_path: Path):
    def sometimes(value):
        if value == 2:
            raise ValueError("degenerate image")
        return value

    guard = ImageGuard("grown", 0)
    results = [guard.run(_record(tmp_path / f"{v}.png", str(v)), sometimes, v) for v in (1, 2, 3)]
    assert results == [1, None, 3]
    assert [f.image_id for f in guard.failures] == ["2"]
    assert "degenerate image" in guard.failures[0].reason


def test_a_failure_holds_until_its_file_changes(tmp_path: Path):
    path = _png(tmp_path / "a.png")
    failure = ImageFailure("cam", 0, "a", str(path), "bad", file_stamp(str(path)))
    stored = {"a": failure.as_metadata()}
    records = [_record(path, "a")]
    assert known_failures("cam", 0, stored, records, {"a"}) == [failure]
    assert known_failures("cam", 0, stored, records, set()) == []  # settings or input changed
    os.utime(path, ns=(1, 1))
    assert known_failures("cam", 0, stored, records, {"a"}) == []  # the file changed


def test_read_image_wraps_decoding_errors(tmp_path: Path):
    path = tmp_path / "not-an-image.png"
    path.write_text("hello")
    with pytest.raises(ImageReadError, match=r"not-an-image\.png"):
        read_image(_record(path))


# --- the pipeline: a truncated image in a real run ---------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness):
    root = tmp_path_factory.mktemp("image-failures")
    source = generate_demo_dataset(root / "source", 20, image_size=64, seed=9).root
    workspace = Workspace(root / "workspace")
    ingest("folder", source, workspace, IngestOptions())
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    train_or_reuse(workspace, load_config(config_file), log=lambda _: None, show_progress=False)
    return {"workspace": workspace, "config": str(config_file)}


def test_a_truncated_image_fails_alone_and_is_retried_when_its_file_changes(
    trained, tmp_path, capsys
):
    from wsss_cli.main import main

    workspace = Workspace(tmp_path / "ws")
    shutil.copytree(trained["workspace"].root, workspace.root)
    victim = read_manifest(workspace).shards(SHARD_SIZE)[1][3]
    original = Path(victim.uri).read_bytes()
    Path(victim.uri).write_bytes(original[: len(original) // 2])
    try:
        code = main(["label", "--workspace", str(workspace.root), "--config", trained["config"]])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        failed = [line for line in captured.err.splitlines() if line.startswith("image failed:")]
        assert len(failed) == 1
        assert failed[0].startswith(
            f"image failed: cam failed for {victim.image_id}: {victim.uri}: "
        )
        # The rest of its shard is computed and cached; later stages skip the image.
        for stage in MAP_STAGES:
            ids = stored_image_ids(workspace.shard_path(stage, 1))
            assert len(ids) == SHARD_SIZE - 1 and victim.image_id not in ids, stage
        assert set(read_failed(workspace.shard_path("cam", 1))) == {victim.image_id}
        assert not workspace.mask_path(victim.image_id).exists()
        quarantined = [q for q in read_quarantine(workspace) if q.image_id == victim.image_id]
        assert [q.category for q in quarantined] == ["cam failed"]
        assert victim.uri in quarantined[0].reason
        status = workspace_status(workspace, load_config(trained["config"]))
        assert status.stage("crf").pending == 0  # nothing left to do until the file changes
        assert any(victim.image_id in line for line in status.lines())

        # Unchanged file and settings: nothing is retried, the failure is still listed.
        state, again = label_run(workspace.root, trained["config"])
        assert state.is_completed()
        assert again.computed_shards == {stage: 0 for stage in MAP_STAGES}
        assert [f.image_id for f in again.failed_images] == [victim.image_id]
    finally:
        Path(victim.uri).write_bytes(original)  # a new size and mtime: a changed file

    # Status agrees with the run: the changed file is pending in cam, as is its shard below.
    status = workspace_status(workspace, load_config(trained["config"]))
    assert status.stage("cam").pending == 1
    state, fixed = label_run(workspace.root, trained["config"])
    assert state.is_completed()
    assert fixed.failed_images == ()
    assert fixed.computed_images == {stage: 1 for stage in MAP_STAGES}
    assert workspace.mask_path(victim.image_id).exists()
    assert not [q for q in read_quarantine(workspace) if q.image_id == victim.image_id]


def test_a_bug_hitting_every_image_fails_the_shards_not_the_images(trained, tmp_path, monkeypatch):
    import wsss_core.stages.seeds_stage as seeds_stage

    workspace = Workspace(tmp_path / "ws")
    shutil.copytree(trained["workspace"].root, workspace.root)
    state, _ = label_run(workspace.root, trained["config"])
    assert state.is_completed()

    def broken(*args, **kwargs):
        raise IndexError("index 3 is out of bounds")

    monkeypatch.setattr(seeds_stage, "make_seeds", broken)
    changed = tmp_path / "seeds.yaml"
    changed.write_text(yaml.safe_dump({**CONFIG, "seeds": {"fg_threshold": 0.5}}))
    state, result = label_run(workspace.root, str(changed))
    assert state.is_failed()
    assert [(f.stage, f.shard_index) for f in result.failures] == [("seeds", 0), ("seeds", 1)]
    assert "IndexError" in result.failures[0].error
    assert result.failed_images == ()
