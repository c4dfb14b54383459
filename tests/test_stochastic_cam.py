"""FickleNet-style stochastic CAMs (wsss_core/stochastic_cam.py, cam.stochastic_*)."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from tiny_models import NUM_CLASSES, TARGETS, tiny_features, tiny_images

from wsss_core.cam import class_activation_maps
from wsss_core.config import CamConfig, PipelineConfig, stage_config_hash
from wsss_core.model.classifier import CamClassifier
from wsss_core.stages.cam_stage import stochastic_selection
from wsss_core.stochastic_cam import (
    AGGREGATES,
    StochasticSelection,
    image_generators,
    image_seed,
    stochastic_maps,
)


@pytest.fixture(scope="module")
def model() -> CamClassifier:
    """conv-BN-ReLU x 2 (16 channels, stride 4), GAP, linear: 8 x 8 feature cells at 32 px."""
    features = tiny_features()
    return CamClassifier(features, 16, NUM_CLASSES).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return tiny_images(32)


def _maps(model, images, selection, seeds=(11, 12, 13), targets=TARGETS, **kwargs):
    return class_activation_maps(
        model, images, targets, stochastic=selection, seeds=list(seeds), **kwargs
    )


def _mean_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(x - y).mean() for x, y in zip(a, b, strict=True)]))


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_one_seed_gives_identical_maps_and_other_seeds_differ(model, images, aggregate):
    selection = StochasticSelection(passes=8, keep=0.5, window=3, aggregate=aggregate)
    first = _maps(model, images, selection, scales=(1.0, 0.5), flip=True)
    again = _maps(model, images, selection, scales=(1.0, 0.5), flip=True)
    other = _maps(model, images, selection, seeds=(21, 22, 23), scales=(1.0, 0.5), flip=True)
    for a, b, c in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
        assert a.min() >= 0 and np.allclose(a.max(axis=(1, 2)), 1.0)


def test_an_images_maps_do_not_depend_on_its_batch_mates(model, images):
    """Each image draws from its own generator: alone or in a batch, the same selections."""
    selection = StochasticSelection(passes=6, keep=0.5)
    batch = _maps(model, images, selection)
    alone = _maps(model, images[1:2], selection, seeds=(12,), targets=TARGETS[1:2])
    # Only the convolution's last bits may move with the batch size.
    np.testing.assert_allclose(alone[0], batch[1], atol=1e-5)


def test_the_mean_converges_as_passes_are_added():
    """Two seeds' means get closer as passes grow: the error falls as 1 / sqrt(passes)."""
    features = torch.rand((16, 8, 8), generator=torch.Generator().manual_seed(2))
    weights = torch.randn((3, 16), generator=torch.Generator().manual_seed(3))

    def gap(passes: int) -> float:
        selection = StochasticSelection(passes=passes, keep=0.5, window=3)
        gaps = []
        for seed in range(4):
            a, b = (
                stochastic_maps(weights, features, g, selection)
                for g in image_generators([seed, 100 + seed])
            )
            gaps.append(float((a - b).abs().mean()))
        return float(np.mean(gaps))

    few, many = gap(4), gap(64)
    assert few > 0
    assert many < few / 3  # 1/4 expected


def test_the_max_aggregate_covers_the_mean_and_grows_with_every_pass():
    """FickleNet's union: every pass can only add; the mean of the same passes lies below it."""
    features = torch.rand((16, 8, 8), generator=torch.Generator().manual_seed(4))
    weights = torch.randn((3, 16), generator=torch.Generator().manual_seed(5))

    def maps(passes: int, aggregate: str) -> torch.Tensor:
        selection = StochasticSelection(passes=passes, keep=0.5, aggregate=aggregate)
        (generator,) = image_generators([9])
        return stochastic_maps(weights, features, generator, selection)

    few, many = maps(4, "max"), maps(16, "max")
    assert bool((many >= few).all()) and bool((many > few).any())
    assert bool((maps(16, "mean") <= many + 1e-6).all())


def test_keeping_every_unit_gives_the_plain_cam(model, images):
    plain = class_activation_maps(model, images, TARGETS, scales=(1.0, 0.5), flip=True)
    every = _maps(model, images, StochasticSelection(3, keep=1.0), scales=(1.0, 0.5), flip=True)
    for a, b in zip(plain, every, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5)
    dropping = _maps(model, images, StochasticSelection(16, keep=0.5))
    assert _mean_difference(dropping, class_activation_maps(model, images, TARGETS)) > 1e-3


def test_draws_do_not_depend_on_the_thread_count():
    """The cam stage sets torch's thread count per shard; the selections must not follow it."""
    draws = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            (generator,) = image_generators([image_seed(0, "img")])
            draws.append(torch.rand((512, 9, 16, 16), generator=generator))
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_draws_the_same_units_as_the_cpu(model, images):
    selection = StochasticSelection(passes=8, keep=0.5, window=3)
    cpu = _maps(model, images, selection)
    cuda = _maps(model.to("cuda"), images.to("cuda"), selection)
    model.to("cpu")
    for a, b in zip(cpu, cuda, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4)


def test_the_config_offers_the_aggregates_the_library_knows():
    annotation = CamConfig.model_fields["stochastic_aggregate"].annotation
    assert get_args(annotation) == AGGREGATES


def test_image_seeds_depend_on_the_config_seed_and_the_image():
    assert image_seed(0, "a") == image_seed(0, "a")
    assert len({image_seed(0, "a"), image_seed(1, "a"), image_seed(0, "b")}) == 3


def test_bad_arguments_are_refused(model, images):
    selection = StochasticSelection(4, 0.5)
    with pytest.raises(ValueError, match="method must be 'cam'"):
        class_activation_maps(
            model, images, TARGETS, method="gradcam", stochastic=selection, seeds=[1, 2, 3]
        )
    with pytest.raises(ValueError, match="one seed per image"):
        class_activation_maps(model, images, TARGETS, stochastic=selection, seeds=[1])
    for bad in (
        {"passes": 0, "keep": 0.5},
        {"passes": 2, "keep": 0.0},
        {"passes": 2, "keep": 0.5, "window": 2},
    ):
        with pytest.raises(ValueError):
            StochasticSelection(**bad)


def test_the_config_refuses_gradient_methods_and_even_windows():
    with pytest.raises(ValidationError, match="needs method cam"):
        CamConfig(method="gradcampp", stochastic_passes=8)
    with pytest.raises(ValidationError, match="must be odd"):
        CamConfig(stochastic_window=4)
    assert stochastic_selection(CamConfig()) is None
    settings = CamConfig(stochastic_passes=8, stochastic_aggregate="max")
    assert stochastic_selection(settings) == StochasticSelection(
        8, settings.stochastic_keep, settings.stochastic_window, "max"
    )


def test_the_option_enters_the_lineage_of_cam_and_below_only_while_on():
    default = PipelineConfig()
    on = PipelineConfig.model_validate({"cam": {"stochastic_passes": 8}})
    changed = {
        s
        for s in ("train", "cam", "affinity", "seeds", "grown", "crf")
        if stage_config_hash(on, s) != stage_config_hash(default, s)
    }
    assert changed == {"cam", "affinity", "seeds", "grown", "crf"}
    # Its settings count while it is on ...
    tunings = (
        ("stochastic_keep", 0.3),
        ("stochastic_window", 3),
        ("stochastic_aggregate", "max"),
        ("stochastic_seed", 1),
    )
    for key, value in tunings:
        tuned = PipelineConfig.model_validate({"cam": {"stochastic_passes": 8, key: value}})
        assert stage_config_hash(tuned, "cam") != stage_config_hash(on, "cam"), key
        # ... and not while it is off: the maps made before the option existed stay current.
        idle = PipelineConfig.model_validate({"cam": {key: value}})
        assert stage_config_hash(idle, "crf") == stage_config_hash(default, "crf"), key
