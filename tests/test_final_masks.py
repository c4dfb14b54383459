"""Final masks: the background level chosen from image edges, and no labelled class vanishing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from folder_ingest import ingest_folder
from PIL import Image

from wsss_core.background import (
    NO_OUTLINE,
    candidate_score,
    class_outline_score,
    edge_strength,
    outline_colour_contrast,
    outline_edge_strength,
    refine_best_background,
)
from wsss_core.config import PipelineConfig
from wsss_core.crf import CrfParams, ImageCrf
from wsss_core.data.manifest import read_manifest
from wsss_core.recovery import recover_vanished_classes, restore_vanished_classes
from wsss_core.review.review_files import MASK_RECOVERED, write_review_files
from wsss_core.stages.common import current_model_hash, expected_lineage, input_hashes
from wsss_core.stages.crf_stage import recovered_masks, run_crf_shard
from wsss_core.store.maps import (
    CamRecord,
    LabelRecord,
    read_label_shard,
    write_cam_shard,
    write_label_shard,
)
from wsss_core.store.workspace import Workspace

POWERS = (0.5, 0.7, 1.0, 1.4, 4.0)


def _ring_scene(size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright ring on a flat dark background, and a CAM blob wider than the ring.

    Power 0.5 declares the whole ring background; power 4 spills into the dark
    disc and around the ring; 0.7 to 1.4 give the ring.
    """
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    ring = (radius > 12) & (radius < 17)
    image = np.full((size, size, 3), 60.0)
    image[ring] = (230, 200, 80)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    cam = np.exp(-(radius**2) / (2 * 14.0**2))[None].astype(np.float32)
    return image, cam, ring


def _iou(mask: np.ndarray, truth: np.ndarray) -> float:
    return float((mask & truth).sum() / (mask | truth).sum())


def test_outline_strength_is_highest_on_the_objects_edges() -> None:
    image, _, ring = _ring_scene()
    strength = edge_strength(image)
    on_edges = outline_edge_strength(np.where(ring, 1, 0).astype(np.uint8), strength)
    disc = np.zeros_like(ring)
    disc[27:37, 27:37] = True  # inside the dark centre
    across = outline_edge_strength(np.where(disc, 1, 0).astype(np.uint8), strength)
    assert on_edges > 3 * across


def test_outline_strength_of_empty_and_full_masks() -> None:
    strength = edge_strength(_ring_scene()[0])
    assert outline_edge_strength(np.zeros((64, 64), np.uint8), strength) == NO_OUTLINE
    full = outline_edge_strength(np.ones((64, 64), np.uint8), strength)
    assert full == pytest.approx(float(strength.mean()))
    unknown = np.full((64, 64), 255, np.uint8)  # unknown is not an object
    assert outline_edge_strength(unknown, strength) == NO_OUTLINE


def test_each_image_keeps_the_level_whose_outline_follows_the_object() -> None:
    image, cams, ring = _ring_scene()
    too_low = refine_best_background(image, cams, [0], (0.5,), CrfParams())
    too_high = refine_best_background(image, cams, [0], (4.0,), CrfParams())
    chosen = refine_best_background(image, cams, [0], POWERS, CrfParams())
    assert (too_low.result.labels == 1).sum() == 0
    assert _iou(too_high.result.labels == 1, ring) < 0.9
    assert chosen.background_power in (0.7, 1.0, 1.4)
    assert _iou(chosen.result.labels == 1, ring) > 0.95


def _checkered_disc(size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A black-and-white checkered disc on green, and a disc half its radius inside it.

    The checkers' gradients are stronger than the disc's edge against the green.
    """
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    disc, core = radius < 22, radius < 11
    checker = (yy // 3 + xx // 3) % 2 == 1
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = (60, 200, 60)
    image[disc & checker] = 255
    image[disc & ~checker] = 0
    return image, disc, core


def test_an_outline_drawn_through_one_texture_has_little_colour_contrast() -> None:
    image, disc, core = _checkered_disc()
    strength = edge_strength(image)
    whole, inside = disc.astype(np.uint8), core.astype(np.uint8)
    # The edge measure alone prefers the line through the texture ...
    assert outline_edge_strength(inside, strength) > outline_edge_strength(whole, strength)
    # ... the bands either side of it have nearly the same mean colour, the object's do not.
    assert outline_colour_contrast(core, image) < 0.25 * outline_colour_contrast(disc, image)
    by_class = [candidate_score(m, image, strength, [0], "class_outlines") for m in (whole, inside)]
    by_edge = [candidate_score(m, image, strength, [0], "edge") for m in (whole, inside)]
    assert by_class[0] > by_class[1] and by_edge[0] < by_edge[1]
    empty = np.zeros_like(whole)
    assert candidate_score(empty, image, strength, [0], "class_outlines") == NO_OUTLINE


def test_a_candidate_that_loses_a_labelled_class_scores_less_by_class_outlines() -> None:
    image, disc, _ = _checkered_disc()
    image[:, 32:][disc[:, 32:]] = (200, 40, 40)  # the right half is a red object of class 5
    both = np.where(disc, 1, 0).astype(np.uint8)
    both[:, 32:][disc[:, 32:]] = 6
    lost = np.where(both == 1, 1, 0).astype(np.uint8)  # class 5 gone
    strength = edge_strength(image)
    assert candidate_score(lost, image, strength, [0, 5], "edge") > candidate_score(
        both, image, strength, [0, 5], "edge"
    )  # the line between the halves counts for nothing against background
    kept = candidate_score(both, image, strength, [0, 5], "class_outlines")
    assert kept > candidate_score(lost, image, strength, [0, 5], "class_outlines")
    # Each class is scored on its own outline; a lost one counts 0.
    alone = class_outline_score(lost == 1, image, strength)
    assert candidate_score(lost, image, strength, [0, 5], "class_outlines") == alone / 2
    assert class_outline_score(np.zeros(disc.shape, bool), image, strength) == 0.0
    assert outline_colour_contrast(np.ones(disc.shape, bool), image) == 0.0


def test_the_background_score_is_a_crf_setting_in_the_crf_and_heads_lineages() -> None:
    from wsss_core.config import stage_config_hash
    from wsss_core.model.segmentation_head import head_lineage

    contrast = PipelineConfig()
    assert contrast.crf.background_score == "class_outlines"
    edge = PipelineConfig.model_validate({"crf": {"background_score": "edge"}})
    assert stage_config_hash(edge, "crf") != stage_config_hash(contrast, "crf")
    assert head_lineage(edge, "model") != head_lineage(contrast, "model")
    assert stage_config_hash(edge, "grown") == stage_config_hash(contrast, "grown")
    with pytest.raises(ValueError, match="background_score"):
        PipelineConfig.model_validate({"crf": {"background_score": "saliency"}})


def test_the_background_choice_takes_the_callers_crf_only_if_it_is_this_images() -> None:
    image, cams, _ = _ring_scene()
    params = CrfParams()
    shared = ImageCrf(image, params)  # the crf stage's: the second pass reuses it
    reused = refine_best_background(image, cams, [0], POWERS, params, crf=shared)
    fresh = refine_best_background(image, cams, [0], POWERS, params)
    np.testing.assert_array_equal(reused.result.labels, fresh.result.labels)
    np.testing.assert_array_equal(reused.result.confidence, fresh.result.confidence)
    with pytest.raises(ValueError, match="other CRF parameters"):
        refine_best_background(image, cams, [0], POWERS, CrfParams(iterations=3), crf=shared)
    with pytest.raises(ValueError, match="another image size"):
        refine_best_background(image[:32], cams[:, :32], [0], POWERS, params, crf=shared)


def test_a_vanished_class_gets_its_grown_region_back() -> None:
    crf = np.zeros((8, 8), np.uint8)
    crf[0:2, 0:2] = 3  # class 2 kept, plenty of it
    crf[6:8, 6:8] = 3  # ... and it took part of class 0's grown region
    grown = np.full((8, 8), 255, np.uint8)
    grown[0:2, 0:2] = 3
    grown[5:8, 5:8] = 1  # class 0: the CRF left it nothing
    out, recovered = recover_vanished_classes(crf, grown, [0, 2], min_kept_share=0.1)
    assert recovered == (0,)
    assert (out == 1).sum() == 9 - 4  # its grown region, less the other class's pixels
    assert (out[6:8, 6:8] == 3).all()
    assert (crf == 1).sum() == 0  # the input is not modified


def test_a_class_shrunk_far_below_its_grown_area_counts_as_vanished() -> None:
    grown = np.zeros((10, 10), np.uint8)
    grown[:, :5] = 1
    crf = np.zeros((10, 10), np.uint8)
    crf[0, 0:4] = 1  # 4 of 50 pixels kept
    assert recover_vanished_classes(crf, grown, [0], 0.1)[1] == (0,)
    assert recover_vanished_classes(crf, grown, [0], 0.05)[1] == ()
    with pytest.raises(ValueError, match="min_kept_share"):
        recover_vanished_classes(crf, grown, [0], 1.5)


@pytest.fixture
def flooded_workspace(tmp_path: Path) -> tuple[Workspace, PipelineConfig]:
    """One flat image labelled 'cat' whose CAM is a single pixel: the CRF floods it.

    Its cam and grown shards are written by hand (no training): the grown region
    is a 4 x 4 block, what the fallback must put back.
    """
    root, workspace = tmp_path / "data", Workspace(tmp_path / "ws")
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (24, 16), (90, 120, 60)).save(root / "images" / "a.png")
    (root / "labels.csv").write_text("image_id,labels\na,cat\n")
    ingest_folder(root / "images", root / "labels.csv", workspace)
    workspace.model_path.parent.mkdir(parents=True, exist_ok=True)
    workspace.model_path.write_bytes(b"stand-in checkpoint")
    defaults = PipelineConfig()
    config = defaults.model_copy(  # the affinity stage off: no walk, the grown region restores
        update={
            "crf": defaults.crf.model_copy(update={"gaussian_compat": 60.0}),
            "affinity": defaults.affinity.model_copy(update={"enabled": False}),
            "self_training": defaults.self_training.model_copy(update={"enabled": False}),
        }
    )
    records = read_manifest(workspace).records
    model = current_model_hash(workspace)
    cams = np.zeros((1, 16, 24), np.float32)
    cams[0, 8, 12] = 1.0
    write_cam_shard(
        workspace.shard_path("cam", 0),
        [CamRecord("a", (0,), cams, (0.9,))],
        expected_lineage(config, "cam", model, records),
        inputs=input_hashes(records),
    )
    grown = np.zeros((16, 24), np.uint8)
    grown[6:10, 10:14] = 1
    for stage, labels in (("seeds", grown), ("grown", grown)):
        write_label_shard(
            workspace.shard_path(stage, 0),
            stage,
            [LabelRecord("a", labels)],
            expected_lineage(config, stage, model, records),
            input_hashes(records),
        )
    return workspace, config


def test_an_image_whose_crf_would_empty_a_class_falls_back_and_is_flagged(flooded_workspace):
    workspace, config = flooded_workspace
    model = current_model_hash(workspace)
    run_crf_shard(workspace, config, 0, model_hash=model)
    (row,) = read_label_shard(workspace.shard_path("crf", 0))
    assert row.recovered == (0,)
    assert (row.labels == 1).sum() == 16
    assert row.background_power in config.crf.background_powers
    mask = np.asarray(Image.open(workspace.mask_path("a")))
    assert (mask == 1).sum() == 16
    (found,) = recovered_masks(workspace, config, model)
    assert str(found) == "a (cat)"
    manifest = read_manifest(workspace)
    (files,) = write_review_files(workspace, manifest, config.shard_size)
    assert MASK_RECOVERED in files.flags


def test_a_vanished_class_comes_back_from_the_walk_first_then_from_grown() -> None:
    crf = np.zeros((8, 8), np.uint8)
    grown = np.zeros((8, 8), np.uint8)
    grown[3:5, 3:5] = 1  # class 0's confident core
    grown[0, 0:2] = 2  # class 1's
    walk = np.zeros((8, 8), np.uint8)
    walk[1:7, 1:7] = 1  # the walk spans class 0's object; it has no class 1
    calls = []

    def walk_region() -> np.ndarray:
        calls.append(1)
        return walk

    out, recovered = restore_vanished_classes(crf, grown, [0, 1], 0.1, walk_region)
    assert recovered == (0, 1) and calls == [1]
    assert (out == 1).sum() == 36  # the walk's region, not the core
    assert (out == 2).sum() == 2  # the grown region, the walk had none
    kept = np.where(grown > 0, grown, 0).astype(np.uint8)
    _, none = restore_vanished_classes(kept, grown, [0, 1], 0.1, walk_region)
    assert none == () and calls == [1]  # not walked when nothing vanished
