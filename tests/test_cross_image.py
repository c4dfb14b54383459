"""Cross-image affinity before the CAM head (wsss_core/cross_image.py, cam.cross_image_*)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import ValidationError
from tiny_models import NUM_CLASSES, tiny_features

from wsss_core.cam import class_activation_maps
from wsss_core.config import PipelineConfig, stage_config_hash
from wsss_core.cross_image import (
    NO_PARTNERS,
    CrossImageAffinity,
    partner_indices,
    partners_of,
    refined,
)
from wsss_core.data.manifest import ImageRecord
from wsss_core.model.checkpoint import LoadedClassifier
from wsss_core.model.classifier import CamClassifier
from wsss_core.stages.cam_stage import compute_cams
from wsss_core.stages.image_failures import ImageGuard
from wsss_core.stochastic_cam import StochasticSelection

SETTINGS = CrossImageAffinity(weight=0.5, temperature=0.1)
# Image 3 (class 2) and image 5 (class 3) share no class with any other image.
LABELS = ((0,), (0, 1), (1,), (2,), (0,), (3,))
SIZES = ((24, 40), (30, 30), (30, 30), (24, 40), (30, 30), (40, 24))
ALONE = (3, 5)


@pytest.fixture(scope="module")
def model() -> CamClassifier:
    """conv-BN-ReLU x 2 (16 channels, stride 4), GAP, linear."""
    features = tiny_features()
    return CamClassifier(features, 16, NUM_CLASSES).eval()


@pytest.fixture()
def records(tmp_path: Path) -> list[ImageRecord]:
    """Synthetic images of three sizes; the same class shares a coloured square."""
    out = []
    for index, ((height, width), labels) in enumerate(zip(SIZES, LABELS, strict=True)):
        rng = np.random.default_rng(index)
        pixels = rng.integers(0, 120, (height, width, 3), np.uint8)
        for label in labels:
            top, left = rng.integers(0, height - 10), rng.integers(0, width - 10)
            pixels[top : top + 10, left : left + 10, label % 3] = 250
        path = tmp_path / f"{index}.png"
        Image.fromarray(pixels).save(path)
        out.append(ImageRecord(f"i{index}", str(path), width, height, labels, "train", "x"))
    return out


def _cams(model, records, batch_size=8, guard=None, device="cpu", **cam) -> dict[str, np.ndarray]:
    classifier = LoadedClassifier(model, [f"c{c}" for c in range(NUM_CLASSES)], 32, 0.0, "h", {})
    settings = {"scales": [1.0, 0.5], "flip": True, "batch_size": batch_size, **cam}
    config = PipelineConfig.model_validate({"cam": settings})
    return {
        r.image_id: r.cams
        for r in compute_cams(classifier, records, config, torch.device(device), guard=guard)
    }


def test_partners_are_the_other_images_sharing_a_class():
    assert partner_indices(LABELS) == [[1, 4], [0, 2, 4], [1], [], [0, 1], []]


def test_the_message_is_the_attention_over_each_partners_locations():
    generator = torch.Generator().manual_seed(3)
    mine = torch.randn(16, 3, 5, generator=generator)
    others = [
        torch.randn(16, 4, 2, generator=generator),
        torch.randn(16, 6, 6, generator=generator),
    ]
    got = refined(mine, partners_of(others, [0, 1]), SETTINGS)
    queries = F.normalize(mine.flatten(1).T, dim=1)
    messages = []
    for other in others:
        values = other.flatten(1).T
        similarity = queries @ F.normalize(values, dim=1).T
        messages.append(torch.softmax(similarity / SETTINGS.temperature, dim=1) @ values)
    expected = mine + SETTINGS.weight * (sum(messages) / 2).T.reshape(mine.shape)
    torch.testing.assert_close(got, expected)
    assert refined(mine, NO_PARTNERS, SETTINGS) is mine


def test_an_image_without_partners_keeps_its_maps_and_the_others_change(model, records):
    off = _cams(model, records)
    on = _cams(model, records, cross_image_weight=0.5)
    assert off.keys() == on.keys()
    for index, record in enumerate(records):
        if index in ALONE:
            np.testing.assert_array_equal(on[record.image_id], off[record.image_id])
        else:
            assert not np.array_equal(on[record.image_id], off[record.image_id]), index


def test_the_partners_do_not_depend_on_the_batching(model, records):
    """Partners come from the group, not the CAM batch: the change each image's maps take is
    the same whatever the batch size. (The plain CAM itself moves in the last bit with the
    batch size, which is why cam.batch_size is in the lineage; across runners with one config
    the maps are bit-identical: test_method_recipes.)"""
    change = {}
    for batch_size in (1, 3):
        off = _cams(model, records, batch_size=batch_size)
        on = _cams(model, records, batch_size=batch_size, cross_image_weight=0.5)
        for index in ALONE:
            np.testing.assert_array_equal(on[f"i{index}"], off[f"i{index}"])
        change[batch_size] = {i: on[i] - off[i] for i in on}
    for image_id, difference in change[1].items():
        np.testing.assert_allclose(change[3][image_id], difference, atol=1e-5, err_msg=image_id)
    assert max(np.abs(d).max() for d in change[1].values()) > 1e-2


def test_groups_follow_the_input_order(model, records):
    """Groups of 2: (0, 1), (2, 3), (4, 5); image 2's only partner (1) is in another group."""
    off = _cams(model, records)
    on = _cams(model, records, cross_image_weight=0.5, cross_image_group=2)
    for index in (2, 3, 4, 5):
        np.testing.assert_array_equal(on[f"i{index}"], off[f"i{index}"])
    assert not np.array_equal(on["i0"], off["i0"])


def test_an_unreadable_image_joins_no_group(model, records):
    Path(records[1].uri).write_bytes(b"not an image")  # image 2's only partner
    guard = ImageGuard("cam", 0)
    off = _cams(model, records, guard=ImageGuard("cam", 0))
    on = _cams(model, records, guard=guard, cross_image_weight=0.5)
    assert [failure.image_id for failure in guard.failures] == ["i1"]
    assert "i1" not in on
    np.testing.assert_array_equal(on["i2"], off["i2"])
    assert not np.array_equal(on["i0"], off["i0"])  # image 4 is still its partner


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_gives_the_cpus_maps_and_keeps_them_without_partners(model, records):
    cpu = _cams(model, records, cross_image_weight=0.5)
    on_gpu = copy.deepcopy(model).cuda()
    off = _cams(on_gpu, records, device="cuda")
    cuda = _cams(on_gpu, records, device="cuda", cross_image_weight=0.5)
    for index, record in enumerate(records):
        np.testing.assert_allclose(cuda[record.image_id], cpu[record.image_id], atol=1e-4)
        if index in ALONE:
            np.testing.assert_array_equal(cuda[record.image_id], off[record.image_id])


def test_the_library_refuses_what_it_cannot_refine(model):
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    partners = [NO_PARTNERS, NO_PARTNERS]
    with pytest.raises(ValueError, match="linear CAM head"):
        class_activation_maps(
            model, images, [[0], [1]], "gradcam", cross_image=SETTINGS, partners=partners
        )
    with pytest.raises(ValueError, match="linear CAM head"):
        class_activation_maps(
            model,
            images,
            [[0], [1]],
            cross_image=SETTINGS,
            partners=partners,
            stochastic=StochasticSelection(4, 0.5, 1, "mean"),
            seeds=[1, 2],
        )
    with pytest.raises(ValueError, match="one Partners per image"):
        class_activation_maps(
            model, images, [[0], [1]], cross_image=SETTINGS, partners=[NO_PARTNERS]
        )
    with pytest.raises(ValueError, match="temperature"):
        CrossImageAffinity(0.5, 0.0)


@pytest.mark.parametrize(
    "settings",
    [
        {"cam": {"cross_image_weight": 0.5, "method": "gradcam"}},
        {"cam": {"cross_image_weight": 0.5, "stochastic_passes": 4}},
        {"cam": {"cross_image_weight": 0.5}, "train": {"multi_dilation": [1, 3]}},
        {"cam": {"cross_image_weight": 0.5}, "train": {"online_erasing_threshold": 0.6}},
        {"cam": {"cross_image_weight": 0.5, "cross_image_group": 1}},
    ],
)
def test_the_config_refuses_combinations_it_cannot_compute(settings):
    with pytest.raises(ValidationError, match="cross_image"):
        PipelineConfig.model_validate(settings)


def test_the_option_enters_the_lineage_of_cam_and_below_only_while_on():
    default = PipelineConfig()
    on = PipelineConfig.model_validate({"cam": {"cross_image_weight": 0.5}})
    changed = {
        s
        for s in ("train", "cam", "affinity", "seeds", "grown", "crf")
        if stage_config_hash(on, s) != stage_config_hash(default, s)
    }
    assert changed == {"cam", "affinity", "seeds", "grown", "crf"}
    for key, value in (("cross_image_group", 4), ("cross_image_temperature", 0.5)):
        tuned = PipelineConfig.model_validate({"cam": {"cross_image_weight": 0.5, key: value}})
        assert stage_config_hash(tuned, "cam") != stage_config_hash(on, "cam"), key
        idle = PipelineConfig.model_validate({"cam": {key: value}})
        assert stage_config_hash(idle, "crf") == stage_config_hash(default, "crf"), key
