"""The review loop on a real FiftyOne database: tags and edits survive pipeline re-runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from headless_chromium import chromium_or_skip
from tiny_pipeline import tiny_review_config

from wsss_core.data.images import load_label_map
from wsss_core.data.manifest import read_manifest
from wsss_core.review.reviews import approved_mask_path, latest_reviews
from wsss_core.store.workspace import Workspace

# Unique per test process: two suites running at once must not share a dataset.
DATASET = f"wsss-review-loop-{os.getpid()}"

CONFIG = tiny_review_config(seed=5)


def _write_config(path: Path, database_dir: Path, **crf) -> str:
    config = {
        **CONFIG,
        "crf": crf,
        "review": {"database_dir": str(database_dir), "dataset_name": DATASET},
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory, prefect_harness, fiftyone_database_dir):
    """A run, then a reviewer's work in FiftyOne, then a review sync."""
    import fiftyone as fo

    from flows.pseudo_label import pseudo_label
    from flows.review_sync import review_sync

    root = tmp_path_factory.mktemp("review")
    config = _write_config(root / "config.yaml", fiftyone_database_dir)
    workspace = Workspace(root / "ws")
    pseudo_label(workspace=str(workspace.root), config_file=config, demo=True)

    dataset = fo.load_dataset(DATASET)
    samples = {s.image_id: s for s in dataset}
    ids = sorted(samples)
    approved, rejected, needs_fix, corrected = ids[:4]
    for image_id, tag in ((approved, "approved"), (rejected, "rejected"), (needs_fix, "needs-fix")):
        samples[image_id].tags.append(tag)
        samples[image_id].save()
    sample = samples[corrected]
    names = [c.label for c in sample["labels"].classifications]
    new_name = next(f"digit_{d}" for d in range(10) if f"digit_{d}" not in names)
    sample["labels"] = fo.Classifications(classifications=[fo.Classification(label=new_name)])
    sample.save()

    summary = review_sync(workspace=str(workspace.root), config_file=config)
    yield {
        "workspace": workspace,
        "root": root,
        "config": config,
        "summary": summary,
        "approved": approved,
        "rejected": rejected,
        "needs_fix": needs_fix,
        "corrected": corrected,
        "corrected_label": int(new_name.split("_")[1]),
    }
    dataset.delete()


def test_sync_records_tags_and_corrections(reviewed):
    summary, workspace = reviewed["summary"], reviewed["workspace"]
    assert (summary.changed, summary.approved, summary.rejected, summary.needs_fix) == (4, 1, 1, 1)
    assert summary.label_corrections == 1
    latest = latest_reviews(workspace)
    assert latest[reviewed["approved"]].status == "approved"
    assert latest[reviewed["rejected"]].status == "rejected"
    assert latest[reviewed["needs_fix"]].status == "needs-fix"
    assert latest[reviewed["corrected"]].labels == (reviewed["corrected_label"],)
    table = pq.read_table(workspace.root / "reviews.parquet")  # plain pyarrow reads it
    assert table.num_rows == 4


def test_label_correction_reaches_the_manifest(reviewed):
    records = read_manifest(reviewed["workspace"]).by_id()
    assert records[reviewed["corrected"]].labels == (reviewed["corrected_label"],)


def test_sync_again_records_nothing_new(reviewed):
    from flows.review_sync import review_sync

    again = review_sync(workspace=str(reviewed["workspace"].root), config_file=reviewed["config"])
    assert again.changed == 0
    assert pq.read_table(reviewed["workspace"].root / "reviews.parquet").num_rows == 4


def test_export_leaves_out_maps_made_before_a_label_correction(reviewed, tmp_path):
    """Before a re-run, the corrected image's masks show its old labels: not exported."""
    from wsss_core.config import load_config
    from wsss_core.export.voc import export_voc

    workspace = reviewed["workspace"]
    summary = export_voc(workspace, load_config(reviewed["config"]), tmp_path / "early")
    exported = {p.stem for p in (tmp_path / "early" / "SegmentationClass").glob("*.png")}
    assert summary.outdated == 1
    assert reviewed["corrected"] not in exported
    assert reviewed["approved"] in exported  # frozen: what the reviewer approved
    assert len(exported) == len(read_manifest(workspace)) - 2  # minus rejected and corrected


def test_rerun_keeps_tags_edits_and_the_frozen_mask(reviewed):
    import fiftyone as fo

    from flows.pseudo_label import pseudo_label

    workspace, approved = reviewed["workspace"], reviewed["approved"]
    frozen = approved_mask_path(workspace, approved)
    frozen_pixels = load_label_map(frozen)
    # A different CRF setting recomputes every mask, the approved one included.
    config = _write_config(
        reviewed["root"] / "config2.yaml", Path(fo.config.database_dir), bilateral_srgb=3.0
    )
    result = pseudo_label(workspace=str(workspace.root), config_file=config)
    assert result.computed_shards["crf"] == 2

    samples = {s.image_id: s for s in fo.load_dataset(DATASET)}
    assert "approved" in samples[approved].tags
    assert "rejected" in samples[reviewed["rejected"]].tags
    assert "needs-fix" in samples[reviewed["needs_fix"]].tags
    corrected = samples[reviewed["corrected"]]["labels"].classifications
    assert [c.label for c in corrected] == [f"digit_{reviewed['corrected_label']}"]
    assert Path(samples[approved]["pseudo_mask"].mask_path) == frozen
    np.testing.assert_array_equal(load_label_map(frozen), frozen_pixels)


def test_export_only_approved_and_never_rejected(reviewed, tmp_path):
    """No --config: the workspace's, saved by the re-run above (another CRF setting).

    Maps are exported only for the config and model that made them.
    """
    from wsss_cli.main import main

    workspace = reviewed["workspace"]
    out = tmp_path / "approved"
    assert (
        main(
            [
                "export",
                "--workspace",
                str(workspace.root),
                "--out",
                str(out),
                "--only-approved",
            ]
        )
        == 0
    )
    files = sorted(p.stem for p in (out / "SegmentationClass").glob("*.png"))
    assert files == [reviewed["approved"]]
    np.testing.assert_array_equal(
        load_label_map(out / "SegmentationClass" / f"{reviewed['approved']}.png"),
        load_label_map(approved_mask_path(workspace, reviewed["approved"])),
    )
    lines = (out / "classes.txt").read_text().splitlines()
    assert lines[0] == "background" and lines[1:] == [f"digit_{d}" for d in range(10)]

    everything = tmp_path / "all"
    assert (
        main(
            [
                "export",
                "--workspace",
                str(workspace.root),
                "--out",
                str(everything),
            ]
        )
        == 0
    )
    exported = {p.stem for p in (everything / "SegmentationClass").glob("*.png")}
    assert reviewed["rejected"] not in exported
    assert len(exported) == len(read_manifest(workspace)) - 1


def test_app_shows_the_samples_with_masks(reviewed, tmp_path, free_port):
    """A real browser opens the App: the dataset, its samples and mask fields are on the page."""
    import subprocess

    from PIL import Image

    from wsss_core.config import load_config
    from wsss_core.review.fiftyone_adapter import app_url, start_app

    chromium = chromium_or_skip()
    config = load_config(reviewed["config"]).review.model_copy(update={"port": free_port()})
    session = start_app(reviewed["workspace"], config)
    try:
        url = app_url(reviewed["workspace"], config)
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,900",
            "--virtual-time-budget=25000",
        ]
        screenshot = tmp_path / "app.png"

        def browse(*args: str) -> str:
            return subprocess.run(
                [chromium, *flags, *args, url],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout

        # Headless Chromium sometimes stops before the App's first render on a busy
        # machine (a blank shell page after ~2 s): a few tries, then the checks.
        for _ in range(3):
            dom = browse("--dump-dom")
            if DATASET in dom and "digit_" in dom:
                break
        for _ in range(3):
            browse(f"--screenshot={screenshot}")
            pixels = np.asarray(Image.open(screenshot).convert("RGB"))
            if len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2000:
                break
    finally:
        session.close()
    assert DATASET in dom
    for field in ("pseudo_mask", "ground_truth", "labels"):
        assert field in dom
    assert "digit_" in dom  # sample label chips in the grid
    assert pixels.shape[:2] == (900, 1400)
    # a grid of images, not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2000


def test_saved_views_split_the_work(reviewed):
    import fiftyone as fo

    dataset = fo.load_dataset(DATASET)
    assert {"review-queue", "approved", "rejected", "needs-fix"} <= set(dataset.list_saved_views())
    queue = dataset.load_saved_view("review-queue")
    assert reviewed["approved"] not in queue.values("image_id")
    assert reviewed["rejected"] not in queue.values("image_id")
    assert reviewed["needs_fix"] in queue.values("image_id")
    # Masks with a recovered class first, then the least confident.
    recovered = ["mask-recovered" in flags for flags in queue.values("flags")]
    assert recovered == sorted(recovered, reverse=True)
    for group in (True, False):
        scores = [
            c
            for c, r in zip(queue.values("crf_confidence"), recovered, strict=True)
            if r is group and c is not None
        ]
        assert scores == sorted(scores)
    assert dataset.load_saved_view("approved").values("image_id") == [reviewed["approved"]]


def test_publish_never_overwrites_an_unsynced_label_edit(reviewed):
    import fiftyone as fo

    from wsss_core.config import load_config
    from wsss_core.review.fiftyone_adapter import publish

    dataset = fo.load_dataset(DATASET)
    image_id = sorted(dataset.values("image_id"))[5]
    sample = dataset.match({"image_id": image_id}).first()
    sample["labels"] = fo.Classifications(
        classifications=[fo.Classification(label="digit_0"), fo.Classification(label="digit_1")]
    )
    sample.save()
    publish(reviewed["workspace"], load_config(reviewed["config"]).review, shard_size=6)
    sample.reload()
    assert sorted(c.label for c in sample["labels"].classifications) == ["digit_0", "digit_1"]


def test_classifier_scores_reach_the_curation_flags(reviewed):
    import fiftyone as fo

    from wsss_core.store.maps import iter_stage_cams

    workspace = reviewed["workspace"]
    cams = list(iter_stage_cams(workspace.maps_dir("cam")))
    assert len(cams) == len(read_manifest(workspace))
    for cam in cams:
        assert len(cam.class_scores) == 10 and all(0 <= s <= 1 for s in cam.class_scores)
    dataset = fo.load_dataset(DATASET)
    ids, flags = dataset.values(["image_id", "flags"])
    assert all(isinstance(f, list) for f in flags)
    flagged = dataset.load_saved_view("label-suspects").values("image_id")
    assert sorted(flagged) == sorted(i for i, f in zip(ids, flags, strict=True) if f)


def test_undoing_a_label_correction_is_recorded(reviewed):
    import fiftyone as fo

    from flows.review_sync import review_sync
    from wsss_core.config import load_config
    from wsss_core.review.fiftyone_adapter import publish

    workspace, image_id = reviewed["workspace"], reviewed["corrected"]
    review_config = load_config(reviewed["config"]).review
    publish(workspace, review_config, shard_size=6)  # shows the synced correction
    # The reviewer restores the source's labels (from the demo's labels.csv).
    rows = (workspace.root / "demo-source" / "labels.csv").read_text().splitlines()
    source_names = next(r.split(",")[1] for r in rows if r.startswith(f"{image_id},")).split(";")
    assert latest_reviews(workspace)[image_id].labels != tuple(
        sorted(int(n.split("_")[1]) for n in source_names)
    )
    dataset = fo.load_dataset(DATASET)
    sample = dataset.match({"image_id": image_id}).first()
    sample["labels"] = fo.Classifications(
        classifications=[fo.Classification(label=n) for n in source_names]
    )
    sample.save()
    review_sync(workspace=str(workspace.root), config_file=reviewed["config"])
    expected = tuple(sorted(int(n.split("_")[1]) for n in source_names))
    assert read_manifest(workspace).by_id()[image_id].labels == expected
    publish(workspace, review_config, shard_size=6)
    sample.reload()
    assert sorted(c.label for c in sample["labels"].classifications) == sorted(source_names)


def test_export_to_the_same_folder_removes_what_no_longer_qualifies(reviewed, tmp_path):
    from wsss_cli.main import main

    workspace, out = reviewed["workspace"], tmp_path / "export"
    common = ["export", "--workspace", str(workspace.root), "--out", str(out)]
    assert main(common) == 0
    assert len(list((out / "SegmentationClass").glob("*.png"))) > 1
    assert main([*common, "--only-approved"]) == 0
    files = sorted(p.stem for p in (out / "SegmentationClass").glob("*.png"))
    assert files == [reviewed["approved"]]


def test_a_label_edit_made_while_publish_prepares_is_not_overwritten(fiftyone_database_dir):
    import fiftyone as fo

    from wsss_core.review.fiftyone_adapter import _classifications, _keep_labels_edited_meanwhile

    dataset = fo.Dataset(f"{DATASET}-window")
    try:
        sample = fo.Sample(filepath="/nonexistent/a.png", image_id="a")
        sample["labels"] = _classifications(fo, ["digit_1"])
        dataset.add_sample(sample)
        existing = {"a": (sample.id, ["digit_1"], ["digit_1"])}  # what publish read first
        sample["labels"] = _classifications(fo, ["digit_7"])  # a reviewer, meanwhile
        sample.save()
        updates = {
            sample.id: {
                "labels": _classifications(fo, ["digit_2"]),
                "published_labels": ["digit_2"],
                "split": "train",
            }
        }
        _keep_labels_edited_meanwhile(dataset, updates, existing)
        assert updates[sample.id] == {"split": "train"}  # labels dropped, the rest still written
    finally:
        dataset.delete()
