"""CAMs pooled over SLIC superpixels (wsss_core/superpixels.py, seeds.superpixels)."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_core.config import PipelineConfig, SeedConfig, stage_config_hash
from wsss_core.data.manifest import ImageRecord
from wsss_core.stages.image_failures import ImageReadError
from wsss_core.stages.pooled_cams import seed_stage_cams
from wsss_core.store.maps import CamRecord
from wsss_core.superpixels import pool_over_superpixels, superpixel_labels

SIDE = 64


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A red left half and a blue right half with grain: one sharp vertical edge at x = 37."""
    rng = np.random.default_rng(0)
    pixels = np.zeros((SIDE, SIDE, 3), np.float64)
    pixels[:, :37] = (200, 40, 40)
    pixels[:, 37:] = (40, 40, 200)
    pixels += rng.normal(0, 6, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cams() -> np.ndarray:
    """Two smooth maps (a blob and a ramp) and an all-zero one."""
    ys, xs = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    blob = np.exp(-((xs - 0.3) ** 2 + (ys - 0.5) ** 2) / 0.02)
    ramp = xs
    return np.stack([blob / blob.max(), ramp / ramp.max(), np.zeros_like(xs)]).astype(np.float32)


def test_slic_is_deterministic_and_follows_the_edge(image):
    labels = superpixel_labels(image, 40, 10.0)
    np.testing.assert_array_equal(labels, superpixel_labels(image, 40, 10.0))
    assert labels.dtype == np.int32 and labels.min() == 0
    assert 10 <= len(np.unique(labels)) <= 80  # about the number asked for
    # No superpixel straddles the colour edge (give or take the pixel SLIC's smoothing blurs).
    for label in np.unique(labels):
        columns = np.nonzero(labels == label)[1]
        assert columns.max() <= 37 or columns.min() >= 36, label


def test_a_pooled_map_is_constant_inside_each_superpixel(image, cams):
    labels = superpixel_labels(image, 40, 10.0)
    pooled = pool_over_superpixels(cams, labels)
    assert pooled.shape == cams.shape and pooled.dtype == np.float32
    for label in np.unique(labels):
        inside = pooled[:, labels == label]
        np.testing.assert_array_equal(inside, inside[:, :1].repeat(inside.shape[1], axis=1))
    # Each superpixel holds its mean, up to the map's renormalisation to max 1.
    blob = cams[0]
    means = np.array([blob[labels == label].mean() for label in np.unique(labels)])
    np.testing.assert_allclose(pooled[0].max(), 1.0)
    np.testing.assert_allclose(
        [pooled[0][labels == label][0] for label in np.unique(labels)],
        means / means.max(),
        rtol=1e-5,
    )
    np.testing.assert_array_equal(pooled[2], 0)  # an all-zero map stays zero


def test_pooling_refuses_labels_of_another_size(cams):
    with pytest.raises(ValueError, match="do not match"):
        pool_over_superpixels(cams, np.zeros((SIDE, SIDE + 1), np.int32))


def _record(path, labels=(0, 1, 2)) -> ImageRecord:
    return ImageRecord(
        image_id="img",
        uri=str(path),
        width=SIDE,
        height=SIDE,
        labels=tuple(labels),
        split="train",
        sha256="0" * 64,
        gt_uri=None,
    )


def test_the_seed_stages_read_pooled_cams_only_when_on(tmp_path, image, cams):
    from PIL import Image

    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    record, cam_record = _record(path), CamRecord("img", (0, 1, 2), cams)
    assert seed_stage_cams(record, cam_record, SeedConfig()) is cams
    pooled = seed_stage_cams(record, cam_record, SeedConfig(superpixels=40))
    np.testing.assert_array_equal(
        pooled, pool_over_superpixels(cams, superpixel_labels(image, 40, 10.0))
    )
    # An unreadable image is that image's failure (the stage's guard records it).
    path.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"img\.png"):
        seed_stage_cams(record, cam_record, SeedConfig(superpixels=40))
    # No target class: nothing to pool, the image is not read.
    empty = CamRecord("img", (), np.zeros((0, SIDE, SIDE), np.float32))
    assert seed_stage_cams(_record(path, ()), empty, SeedConfig(superpixels=40)) is empty.cams


def test_the_option_enters_the_lineage_of_seeds_and_below_only_while_on():
    default = PipelineConfig()
    on = PipelineConfig.model_validate({"seeds": {"superpixels": 200}})
    stages = ("train", "cam", "affinity", "seeds", "grown", "crf")
    changed = {s for s in stages if stage_config_hash(on, s) != stage_config_hash(default, s)}
    assert changed == {"seeds", "grown", "crf"}
    tuned = PipelineConfig.model_validate(
        {"seeds": {"superpixels": 200, "superpixel_compactness": 3.0}}
    )
    assert stage_config_hash(tuned, "seeds") != stage_config_hash(on, "seeds")
    idle = PipelineConfig.model_validate({"seeds": {"superpixel_compactness": 3.0}})
    assert stage_config_hash(idle, "crf") == stage_config_hash(default, "crf")
