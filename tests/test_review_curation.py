"""Curation flags from the classifier's scores, cached review files, and a database that is down."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

from wsss_core.config import PipelineConfig, ReviewConfig
from wsss_core.data.images import save_label_map, voc_palette
from wsss_core.data.manifest import ImageRecord, read_manifest, write_manifest
from wsss_core.model.checkpoint import LoadedClassifier
from wsss_core.model.classifier import CamClassifier
from wsss_core.model.transforms import to_tensor
from wsss_core.review.review_files import label_flags, review_dir, write_review_files
from wsss_core.review.reviews import ObservedReview, record_reviews
from wsss_core.stages.cam_stage import compute_cams
from wsss_core.store.maps import (
    CAM_SCHEMA,
    CamRecord,
    LabelRecord,
    Lineage,
    cam_shard_has_class_scores,
    read_cam_shard,
    read_label_shard,
    write_cam_shard,
    write_label_shard,
)
from wsss_core.store.parquet_io import write_table
from wsss_core.store.workspace import Workspace

CLASSES = ("cat", "dog", "bird")
LINEAGE = Lineage(config_hash="c" * 16, model_hash="m" * 16, source_hash="s" * 16)
SHARD_SIZE = 4
# image -> (labels, classifier scores of cat / dog / bird, or None: not stored)
IMAGES = {
    "clean": ((0,), (0.95, 0.02, 0.01)),
    "suspect": ((1,), (0.50, 0.05, 0.02)),  # labelled dog, dog scored 0.05
    "missing": ((0,), (0.90, 0.01, 0.97)),  # bird scored 0.97 but not labelled
    "no-scores": ((0, 2), None),  # a row written before scores were stored
    "copy": ((2,), (0.30, 0.30, 0.80)),  # the same bytes as "missing"
    "unlabeled": ((), (0.10, 0.99, 0.20)),  # no labels: dog is a candidate
}


def build_workspace(root: Path) -> Workspace:
    """Manifest, map shards and masks for :data:`IMAGES`, written with the store API."""
    rng = np.random.default_rng(0)
    workspace = Workspace(root / "ws")
    (root / "images").mkdir(parents=True)
    records = []
    for image_id, (labels, _) in IMAGES.items():
        path = root / "images" / f"{image_id}.png"
        if image_id == "copy":
            shutil.copyfile(root / "images" / "missing.png", path)
        else:
            Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(path)
        records.append(
            ImageRecord(
                image_id=image_id,
                uri=str(path),
                width=16,
                height=12,
                labels=labels,
                split="train",
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                status="ok" if labels else "unlabeled",
            )
        )
    write_manifest(workspace, records, CLASSES, {"kind": "test"})
    write_maps(workspace, records, rng)
    return workspace


def write_maps(workspace: Workspace, records, rng) -> None:
    for shard, start in enumerate(range(0, len(records), SHARD_SIZE)):
        cams, seeds, grown, crf = [], [], [], []
        for record in records[start : start + SHARD_SIZE]:
            scores = IMAGES[record.image_id][1]
            maps = rng.random((len(record.labels), 12, 16), dtype=np.float32)
            cams.append(CamRecord(record.image_id, record.labels, maps, scores))
            label = np.zeros((12, 16), np.uint8)
            label[3:9, 4:12] = record.labels[0] + 1 if record.labels else 0
            unknown = label.copy()
            unknown[0, :] = 255
            seeds.append(LabelRecord(record.image_id, unknown))
            grown.append(LabelRecord(record.image_id, unknown))
            crf.append(LabelRecord(record.image_id, label, np.full((12, 16), 0.75, np.float32)))
            save_label_map(workspace.mask_path(record.image_id), label, voc_palette())
        write_cam_shard(workspace.shard_path("cam", shard), cams, LINEAGE)
        write_label_shard(workspace.shard_path("seeds", shard), "seeds", seeds, LINEAGE)
        write_label_shard(workspace.shard_path("grown", shard), "grown", grown, LINEAGE)
        write_label_shard(workspace.shard_path("crf", shard), "crf", crf, LINEAGE)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return build_workspace(tmp_path)


# --------------------------------------------------------------------------- scores


def test_label_flags_from_scores():
    assert label_flags((0,), (0.95, 0.02, 0.01), CLASSES, 0.1, 0.9) == ((), ())
    assert label_flags((1, 2), (0.95, 0.05, 0.5), CLASSES, 0.1, 0.9) == (("dog",), ("cat",))
    assert label_flags((), (0.91, 0.99, 0.9), CLASSES, 0.1, 0.9) == ((), ("cat", "dog"))
    assert label_flags((0,), None, CLASSES, 0.1, 0.9) == ((), ())
    # scores of a model trained on another class list flag nothing
    assert label_flags((0,), (0.0, 1.0), CLASSES, 0.1, 0.9) == ((), ())


def test_cam_table_stores_class_scores_and_reads_shards_without_them(tmp_path: Path):
    cams = np.ones((1, 4, 5), np.float32)
    new = tmp_path / "new.parquet"
    write_cam_shard(
        new, [CamRecord("a", (1,), cams, (0.25, 0.5, 1.0)), CamRecord("b", (0,), cams)], LINEAGE
    )
    a, b = read_cam_shard(new)
    assert a.class_scores == (0.25, 0.5, 1.0) and b.class_scores is None
    assert cam_shard_has_class_scores(new)

    old = tmp_path / "old.parquet"  # the schema before the column existed
    schema = pa.schema([field for field in CAM_SCHEMA if field.name != "class_scores"])
    row = {"image_id": "a", "class_ids": [1], "height": 4, "width": 5, "shape": [1, 4, 5],
           "cams": cams.astype("<f2").tobytes()}  # fmt: skip
    write_table(old, pa.Table.from_pylist([row], schema=schema), {"schema_version": 2})
    (record,) = read_cam_shard(old)
    assert record.class_scores is None and record.cams.shape == (1, 4, 5)
    assert not cam_shard_has_class_scores(old)


def test_compute_cams_stores_every_class_score(tmp_path: Path):
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    model = CamClassifier(features, 8, len(CLASSES)).eval()
    classifier = LoadedClassifier(model, CLASSES, 32, 0.0, "hash", {})
    records = []
    for index, (height, width) in enumerate(((24, 40), (30, 30))):
        path = tmp_path / f"{index}.png"
        pixels = np.random.default_rng(index).integers(0, 255, (height, width, 3), np.uint8)
        Image.fromarray(pixels).save(path)
        records.append(ImageRecord(f"i{index}", str(path), width, height, (index,), "train", "x"))
    config = PipelineConfig.model_validate({"cam": {"scales": [1.0, 0.5], "flip": True}})
    cams = compute_cams(classifier, records, config, torch.device("cpu"))

    for record, cam in zip(records, cams, strict=True):
        assert cam.cams.shape == (1, record.height, record.width)
        size = (32, 32) if record.height == record.width else (19, 32)
        image = to_tensor(np.array(Image.open(record.uri)))[None]
        image = F.interpolate(image, size=size, mode="bilinear", antialias=True)
        with torch.no_grad():
            expected = torch.sigmoid(model(image))[0].numpy()
        assert len(cam.class_scores) == len(CLASSES)
        np.testing.assert_allclose(cam.class_scores, expected, atol=1e-5)
    assert not model.training


# --------------------------------------------------------------------------- review files


def test_review_files_carry_flags_and_are_reused_while_maps_are_unchanged(workspace: Workspace):
    manifest = read_manifest(workspace)
    files = {f.image_id: f for f in write_review_files(workspace, manifest, SHARD_SIZE)}
    assert set(files) == set(IMAGES)
    assert files["clean"].flags == ()
    assert files["suspect"].label_suspects == ("dog",)
    assert files["suspect"].flags == ("label-suspect",)
    assert files["missing"].missing_label_candidates == ("bird",)
    assert files["missing"].flags == ("label-missing",)
    assert files["no-scores"].flags == () and files["no-scores"].class_scores is None
    assert files["copy"].duplicate_of == "missing" and files["copy"].flags == ("duplicate",)
    assert files["unlabeled"].missing_label_candidates == ("dog",)
    assert files["clean"].crf_confidence == pytest.approx(0.75, abs=1e-3)
    assert files["clean"].unknown_share == pytest.approx(16 / (12 * 16))
    heatmap = np.asarray(Image.open(files["clean"].cam_heatmap))
    assert heatmap.shape == (12, 16) and heatmap.max() > 200

    pngs = sorted((workspace.root / "review").rglob("*.png"))
    assert len(pngs) == 3 * len(IMAGES)
    stamps = {p: p.stat().st_mtime_ns for p in pngs}
    # Re-publishing unchanged maps rewrites nothing; new thresholds still apply.
    strict = ReviewConfig(label_suspect_below=0.92, missing_label_above=0.98)
    again = {f.image_id: f for f in write_review_files(workspace, manifest, SHARD_SIZE, strict)}
    assert {p: p.stat().st_mtime_ns for p in pngs} == stamps
    assert again["missing"].label_suspects == ("cat",)  # 0.90 < 0.92
    assert again["missing"].missing_label_candidates == ()  # 0.97 < 0.98
    assert again["clean"].crf_confidence == files["clean"].crf_confidence

    # A recomputed shard (here: shard 1's crf) rewrites that shard's PNGs only.
    time.sleep(0.05)  # past the file system's timestamp granularity
    crf = workspace.shard_path("crf", 1)
    write_label_shard(crf, "crf", list(read_label_shard(crf)), LINEAGE)
    list(write_review_files(workspace, manifest, SHARD_SIZE))
    shard_1 = {"copy", "unlabeled"}
    for png in pngs:
        assert (png.stat().st_mtime_ns != stamps[png]) == (png.stem in shard_1), png
    # A deleted PNG is written again.
    files["clean"].seeds_mask.unlink()
    list(write_review_files(workspace, manifest, SHARD_SIZE))
    assert files["clean"].seeds_mask.exists()
    assert (review_dir(workspace, "index") / "part-00000.json").exists()


def test_publish_writes_flags_and_the_label_suspects_view(
    workspace: Workspace, fiftyone_database_dir
):
    import fiftyone as fo

    from wsss_core.review.fiftyone_adapter import publish

    name = f"wsss-curation-{os.getpid()}"  # unique per test process
    config = ReviewConfig(database_dir=str(fiftyone_database_dir), dataset_name=name)
    summary = publish(workspace, config, shard_size=SHARD_SIZE)
    assert summary.added == len(IMAGES)
    dataset = fo.load_dataset(name)
    try:
        fields = dataset.values(["image_id", "label_suspects", "missing_label_candidates", "flags"])
        by_id = {i: (s, m, f) for i, s, m, f in zip(*fields, strict=True)}
        assert by_id["suspect"] == (["dog"], [], ["label-suspect"])
        assert by_id["missing"] == ([], ["bird"], ["label-missing"])
        assert by_id["copy"] == ([], [], ["duplicate"])
        assert by_id["clean"] == ([], [], [])
        flagged = dataset.load_saved_view("label-suspects").values("image_id")
        assert sorted(flagged) == ["copy", "missing", "suspect", "unlabeled"]
        assert publish(workspace, config, shard_size=SHARD_SIZE).updated == len(IMAGES)
        assert sorted(dataset.load_saved_view("label-suspects").values("image_id")) == sorted(
            flagged
        )
    finally:
        dataset.delete()
    # The pre-check passes on a database that is up (the mongod FiftyOne started here).
    from wsss_core.review.fiftyone_adapter import check_database

    check_database(f"mongodb://127.0.0.1:{os.environ['FIFTYONE_PRIVATE_DATABASE_PORT']}")


# --------------------------------------------------------------------------- database down


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every path under ``root`` with its content hash and mtime (directories: '')."""
    snapshot = {}
    for path in sorted(root.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        snapshot[str(path.relative_to(root))] = (digest, path.stat().st_mtime_ns)
    return snapshot


@pytest.fixture
def reviewed_workspace(workspace: Workspace) -> Workspace:
    """The workspace with a reviews.parquet and a frozen approved mask."""
    record_reviews(workspace, {"clean": ObservedReview(frozenset({"approved"}), (0,))})
    assert (workspace.root / "reviews.parquet").exists()
    return workspace


def _run(args: list[str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    # As a user runs it: conftest's PREFECT_LOGGING_LEVEL would let Prefect log the failure too.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_LEVEL"}
    env["OMP_NUM_THREADS"] = "1"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    return result, time.perf_counter() - started


def test_publish_to_a_database_that_is_down_fails_fast(reviewed_workspace: Workspace):
    """No serverSelectionTimeoutMS in the URI: the 3 s pre-check applies, not pymongo's 30 s."""
    before = _snapshot(reviewed_workspace.root)
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from wsss_core.config import ReviewConfig
        from wsss_core.review.fiftyone_adapter import ReviewDatabaseError, publish
        from wsss_core.store.workspace import Workspace
        started = time.perf_counter()
        try:
            publish(Workspace(Path(sys.argv[1])), ReviewConfig(database_uri=sys.argv[2]))
        except ReviewDatabaseError as error:
            print(f"{time.perf_counter() - started:.2f}", "fiftyone" in sys.modules)
            sys.exit(f"error: {error}")
        """
    )
    uri = "mongodb://wsss:secret@127.0.0.1:1/wsss"
    result, _ = _run(["-c", script, str(reviewed_workspace.root), uri])
    assert result.returncode == 1, result.stderr
    seconds, imported = result.stdout.split()
    assert float(seconds) < 8 and imported == "False"
    (line,) = result.stderr.strip().splitlines()
    assert "mongodb://wsss:***@127.0.0.1:1/wsss is unreachable" in line
    assert "secret" not in line
    assert _snapshot(reviewed_workspace.root) == before


def test_review_sync_with_a_database_that_is_down(reviewed_workspace: Workspace, tmp_path):
    """`wsss review sync` (`wsss run` syncs first, the same call) stops: one line, no writes."""
    uri = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"review": {"database_uri": uri}}))
    before = _snapshot(reviewed_workspace.root)
    workspace = str(reviewed_workspace.root)
    args = ["-m", "wsss_cli.main", "review", "sync", "--workspace", workspace, "--config"]
    result, seconds = _run([*args, str(config)])
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"wsss review: error: review database {uri} is unreachable")
    assert _snapshot(reviewed_workspace.root) == before
    assert seconds < 60  # Prefect's temporary server is most of it
