"""A reviewer's label fix outlives a re-ingest of the source, through the library alone.

The source still lists the original labels; the library's entry points
(``stages.ingest_stage.ingest`` and ``reingest``, what the tasks call) put the
fix recorded in ``reviews.parquet`` back, as the pipeline's Prefect tasks do.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from wsss_core.data.manifest import read_manifest
from wsss_core.review.reviews import ObservedReview, latest_reviews, record_reviews
from wsss_core.stages.ingest_stage import ingest, reingest
from wsss_core.store.workspace import Workspace


def _folder(root: Path) -> None:
    """ROOT/images + ROOT/labels.csv: a is labelled cat, b dog (classes found: cat, dog)."""
    (root / "images").mkdir(parents=True)
    for value, image_id in enumerate(("a", "b")):
        Image.new("RGB", (12, 8), (value * 90, 40, 40)).save(root / "images" / f"{image_id}.png")
    (root / "labels.csv").write_text("image_id,labels\na,cat\nb,dog\n")


def test_reingesting_keeps_a_reviewers_label_fix(tmp_path: Path):
    root, workspace = tmp_path / "data", Workspace(tmp_path / "ws")
    _folder(root)
    first = ingest("folder", root, workspace)
    assert first.label_fixes_kept == 0
    assert read_manifest(workspace).class_names == ("cat", "dog")
    cat, dog = 0, 1

    # A reviewer relabels a as dog in the review tool; the sync records it.
    fixed = {"a": ObservedReview(frozenset(), labels=(dog,), published_labels=(cat,))}
    assert record_reviews(workspace, fixed).label_corrections == 1
    assert (workspace.root / "reviews.parquet").is_file()
    assert latest_reviews(workspace)["a"].labels == (dog,)

    again = ingest("folder", root, workspace)  # the source still says a is a cat
    assert read_manifest(workspace).by_id()["a"].labels == (dog,)
    assert again.label_fixes_kept == 1
    assert again.class_counts == {"cat": 0, "dog": 2}
    assert "1 image(s) keep their reviewer-corrected labels" in again.lines()

    refreshed = reingest(workspace)  # what a scheduled run does first
    assert read_manifest(workspace).by_id()["a"].labels == (dog,)
    assert refreshed.label_fixes_kept == 1
    assert read_manifest(workspace).by_id()["b"].labels == (dog,)  # unfixed rows as listed
