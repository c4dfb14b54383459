"""Self-training: the segmentation head, the mix of its view with the first pass, lineage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import (
    CRF_HASH_WITHOUT_SELF_TRAINING,
    DEFAULT_HASHES,
    EARLIER_CAM_SCALES,
    EARLIER_HASHES,
    STAGES,
    tiny_features,
)

from wsss_core.config import PipelineConfig, SelfTrainingConfig, stage_config_hash
from wsss_core.model.segmentation_head import (
    IGNORED,
    TrainingExample,
    WeightAverage,
    allowed_labels,
    head_lineage,
    head_probabilities,
    load_segmentation_head,
    mixed_probabilities,
    save_segmentation_head,
    train_segmentation_head,
    training_example,
)

NUM_LABELS = 5  # background + 4 classes


def _striped_example(class_id: int) -> TrainingExample:
    """Features that change across the middle; left background, right ``class_id``."""
    level = torch.zeros((1, 4, 8, 8))
    level[:, :, :, 4:] = 1.0
    labels = torch.zeros((8, 8), dtype=torch.int64)
    labels[:, 4:] = class_id + 1
    labels[0, 0] = IGNORED  # an unknown cell counts in no loss
    return TrainingExample([level.half()], labels, allowed_labels([class_id], NUM_LABELS))


def test_the_head_learns_the_masks_it_is_shown_among_the_images_classes() -> None:
    settings = SelfTrainingConfig(epochs=60, batch_size=2, width=8, learning_rate=1e-2)
    examples = [_striped_example(1), _striped_example(3)]
    head, seconds = train_segmentation_head(examples, NUM_LABELS, settings)
    assert seconds > 0
    with torch.no_grad():
        logits = head([examples[0].levels[0].float()], (8, 8))[0]
    # Alike features, two classes: only each image's labels say which one is there.
    allowed = examples[0].allowed[:, None, None]
    predicted = logits.masked_fill(~allowed, -1e4).argmax(dim=0)
    assert (predicted[:, :4] == 0).all() and (predicted[:, 4:] == 2).all()


def test_training_is_seeded() -> None:
    settings = SelfTrainingConfig(epochs=2, batch_size=1, width=8)
    examples = [_striped_example(0), _striped_example(2)]
    first, _ = train_segmentation_head(examples, NUM_LABELS, settings)
    again, _ = train_segmentation_head(examples, NUM_LABELS, settings)
    other, _ = train_segmentation_head(
        examples, NUM_LABELS, settings.model_copy(update={"seed": 1})
    )
    state, same, changed = first.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[name], same[name]) for name in state)
    assert not all(torch.equal(state[name], changed[name]) for name in state)
    # trained channels-last, returned as a head loaded from its file is laid out
    assert all(parameter.is_contiguous() for parameter in first.parameters())


def test_probabilities_cover_only_background_and_the_images_classes(tmp_path) -> None:
    backbone = tiny_features().eval()
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    labels = np.zeros((40, 56), np.uint8)
    labels[10:30, 20:40] = 3  # class 2
    example = training_example(backbone, image, labels, (2,), NUM_LABELS, 64)
    assert example.labels.shape == (12, 16)  # the grid of the 64 x 46 network input
    assert set(example.labels.unique().tolist()) == {0, 3}
    head, _ = train_segmentation_head([example], NUM_LABELS, SelfTrainingConfig(epochs=1, width=8))
    path = tmp_path / "head.pt"
    save_segmentation_head(path, head, "lineage", 1, 1.0)
    loaded = load_segmentation_head(path)
    assert loaded.lineage == "lineage" and loaded.images == 1
    probs = head_probabilities(loaded.head, backbone, image, (0, 2), 64)
    assert probs.shape == (3, 40, 56) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs, head_probabilities(head, backbone, image, (0, 2), 64))


def test_a_small_image_is_enlarged_at_most_max_upscale_times() -> None:
    backbone = tiny_features().eval()
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (40, 32, 3), dtype=np.uint8)
    labels = np.zeros((40, 32), np.uint8)
    capped = training_example(backbone, small, labels, (2,), NUM_LABELS, 64, max_upscale=1.2)
    assert capped.labels.shape == (12, 10)  # 48 x 38 input: 1.2 x, not 1.6 x to reach 64
    assert training_example(backbone, small, labels, (2,), NUM_LABELS, 64).labels.shape == (
        16,
        13,
    )
    large = rng.integers(0, 256, (60, 48, 3), dtype=np.uint8)
    labels = np.zeros((60, 48), np.uint8)
    at_side = training_example(backbone, large, labels, (2,), NUM_LABELS, 64, max_upscale=1.2)
    assert at_side.labels.shape == (16, 13)  # 64 px reached within 1.2 x: not capped
    head, _ = train_segmentation_head([capped], NUM_LABELS, SelfTrainingConfig(epochs=1, width=8))
    probs = head_probabilities(head, backbone, small, (2,), 64, max_upscale=1.2)
    assert probs.shape == (2, 40, 32)  # back at the image's own size


def test_test_scales_average_the_heads_view_of_the_image_at_each_size() -> None:
    backbone = tiny_features().eval()
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    labels = np.zeros((48, 40), np.uint8)
    labels[8:40, 10:30] = 2  # class 1
    example = training_example(backbone, image, labels, (1,), NUM_LABELS, 64)
    head, _ = train_segmentation_head([example], NUM_LABELS, SelfTrainingConfig(epochs=3, width=8))

    def read(scales: tuple[float, ...]) -> np.ndarray:
        return head_probabilities(head, backbone, image, (1,), 64, 1.5, scales)

    one, half = read((1.0,)), read((0.5,))
    np.testing.assert_array_equal(one, head_probabilities(head, backbone, image, (1,), 64, 1.5))
    assert not np.allclose(one, half)  # a 32-px input, not the 64-px one
    # the same as reading 0.5 x (input_side, max_upscale) at one scale
    np.testing.assert_array_equal(half, head_probabilities(head, backbone, image, (1,), 32, 0.75))
    both = read((0.5, 1.0))
    assert both.shape == (2, 48, 40)
    np.testing.assert_allclose(both, (one + half) / 2, atol=1e-6)
    np.testing.assert_allclose(both.sum(axis=0), 1.0, atol=1e-5)


def test_weight_decay_is_the_heads_setting() -> None:
    examples = [_striped_example(0), _striped_example(2)]
    settings = SelfTrainingConfig(epochs=3, batch_size=2, width=8, learning_rate=1e-2)
    light, _ = train_segmentation_head(examples, NUM_LABELS, settings)
    heavy, _ = train_segmentation_head(
        examples, NUM_LABELS, settings.model_copy(update={"weight_decay": 1.0})
    )
    norm = sum(float(p.norm()) for p in light.parameters())
    assert sum(float(p.norm()) for p in heavy.parameters()) < norm
    with pytest.raises(ValueError, match="weight_decay"):
        SelfTrainingConfig(weight_decay=-1.0)
    with pytest.raises(ValueError, match="test_scales"):
        SelfTrainingConfig(test_scales=())


def test_the_weight_average_is_the_mean_of_the_steps_it_was_given() -> None:
    layer = torch.nn.Linear(2, 1)
    average = WeightAverage(layer)
    average.load_into(layer)  # no step added: the weights stay
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.add(layer)
    average.load_into(layer)
    assert torch.allclose(layer.weight, torch.full((1, 2), 3.0))


def test_an_averaged_head_is_trained_as_long_and_seeded() -> None:
    examples = [_striped_example(0), _striped_example(2)]
    settings = SelfTrainingConfig(epochs=4, batch_size=1, width=8, average_epochs=2)
    averaged, _ = train_segmentation_head(examples, NUM_LABELS, settings)
    again, _ = train_segmentation_head(examples, NUM_LABELS, settings)
    last, _ = train_segmentation_head(
        examples, NUM_LABELS, settings.model_copy(update={"average_epochs": 0})
    )
    state = averaged.state_dict()
    assert all(torch.equal(state[name], again.state_dict()[name]) for name in state)
    assert not all(torch.equal(state[name], last.state_dict()[name]) for name in state)
    # more epochs averaged than trained: all of them
    over_all = settings.model_copy(update={"average_epochs": 4})
    every, _ = train_segmentation_head(examples, NUM_LABELS, over_all)
    beyond, _ = train_segmentation_head(
        examples, NUM_LABELS, over_all.model_copy(update={"average_epochs": 9})
    )
    assert all(torch.equal(every.state_dict()[n], beyond.state_dict()[n]) for n in state)


def test_a_file_that_is_not_a_head_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "head.pt"
    torch.save({"format": "something else"}, path)
    with pytest.raises(ValueError, match="not a wsss self-training head"):
        load_segmentation_head(path)
    with pytest.raises(FileNotFoundError, match="wsss label"):
        load_segmentation_head(tmp_path / "missing.pt")


def test_half_and_half_the_mix_never_overrules_the_first_pass_alone() -> None:
    """At weight 0.5 the first-pass label keeps the most mass wherever the head disagrees,
    but its margin shrinks with the head's doubt: the CRF's edges then decide."""
    rng = np.random.default_rng(0)
    head = rng.random((3, 16, 16)).astype(np.float32)
    head /= head.sum(axis=0, keepdims=True)
    labels = rng.choice(np.array([0, 1, 4], np.uint8), (16, 16))  # classes 0 and 3
    labels[0, :4] = 255
    mixed = mixed_probabilities(head, labels, (0, 3), 0.5)
    np.testing.assert_allclose(mixed.sum(axis=0), 1.0, atol=1e-6)
    channel = np.select([labels == 1, labels == 4], [1, 2], 0)
    known = labels != 255
    assert (mixed.argmax(axis=0)[known] == channel[known]).all()
    np.testing.assert_allclose(mixed[:, 0, :4], 0.5 * head[:, 0, :4] + 0.5 / 3, atol=1e-6)
    agreeing = np.take_along_axis(mixed, channel[None], axis=0)[0]
    heads_view = np.take_along_axis(head, channel[None], axis=0)[0]
    np.testing.assert_allclose(agreeing[known], 0.5 + 0.5 * heads_view[known], atol=1e-6)


def test_the_option_enters_only_the_crf_lineage_and_only_while_on() -> None:
    """On by default since 2026-12-03; a workspace that switches it off keeps its old masks."""
    default = PipelineConfig()
    assert {stage: stage_config_hash(default, stage) for stage in STAGES} == DEFAULT_HASHES
    then = {"crf": {"background_score": "edge"}, "cam": {"scales": EARLIER_CAM_SCALES}}
    off = PipelineConfig.model_validate({"self_training": {"enabled": False}, **then})
    assert stage_config_hash(off, "crf") == CRF_HASH_WITHOUT_SELF_TRAINING
    idle = {"enabled": False, "epochs": 3, "head_weight": 0.3}
    idle_config = PipelineConfig.model_validate({"self_training": idle, **then})
    assert stage_config_hash(idle_config, "crf") == CRF_HASH_WITHOUT_SELF_TRAINING
    changed = {s for s in STAGES if stage_config_hash(off, s) != EARLIER_HASHES[s]}
    assert changed == {"crf"}


def test_new_head_settings_at_their_earlier_behaviour_keep_the_masks_made_before_them() -> None:
    """test_scales (1,), weight_decay 1e-4 and average_epochs 0 are what came before them:
    a workspace that sets them keeps its head and masks of 2026-12-07."""
    earlier = {"test_scales": [1.0], "weight_decay": 1e-4, "average_epochs": 0}
    cam = {"scales": EARLIER_CAM_SCALES}  # as on 2026-12-07
    spelled = PipelineConfig.model_validate({"self_training": earlier, "cam": cam})
    last_step = PipelineConfig.model_validate({"self_training": {"average_epochs": 0}, "cam": cam})
    assert stage_config_hash(spelled, "crf") == stage_config_hash(last_step, "crf")
    assert head_lineage(spelled, "model") == head_lineage(last_step, "model")
    assert stage_config_hash(spelled, "crf") == "9e62b96741407981"  # the defaults of 2026-12-07
    default = PipelineConfig()
    assert stage_config_hash(default, "crf") == DEFAULT_HASHES["crf"] != "9e62b96741407981"
    assert head_lineage(default, "model") != head_lineage(last_step, "model")
    scaled = PipelineConfig.model_validate({"self_training": {"test_scales": [0.75, 1.0]}})
    assert stage_config_hash(scaled, "crf") != DEFAULT_HASHES["crf"]
    assert head_lineage(scaled, "model") == head_lineage(default, "model")


def test_the_head_lineage_follows_the_first_pass_and_training_not_the_mix() -> None:
    on = PipelineConfig.model_validate({"self_training": {"enabled": True}})
    lineage = head_lineage(on, "model")

    def changed(**sections: dict) -> str:
        return head_lineage(PipelineConfig.model_validate({**on.model_dump(), **sections}), "model")

    assert changed(self_training={"enabled": True, "head_weight": 0.3}) == lineage
    assert changed(self_training={"enabled": True, "epochs": 3}) != lineage
    assert changed(self_training={"enabled": True, "max_upscale": 2.0}) != lineage
    # Training's thread count splits its sums; the second pass's is not the head's.
    assert changed(self_training={"enabled": True, "training_threads": 1}) != lineage
    assert changed(self_training={"enabled": True, "cpu_threads": 2}) == lineage
    # Test scales read the head, so they reuse it; weight decay trains it.
    assert changed(self_training={"enabled": True, "test_scales": [0.75, 1.0]}) == lineage
    assert changed(self_training={"enabled": True, "weight_decay": 1e-2}) != lineage
    assert changed(self_training={"enabled": True, "average_epochs": 2}) != lineage
    assert changed(crf={"bilateral_srgb": 7.0}) != lineage  # other first-pass masks
    assert head_lineage(on, "another classifier") != lineage


def test_a_kept_first_pass_is_used_only_for_the_inputs_and_head_it_was_made_for(tmp_path) -> None:
    from wsss_core.data.manifest import ImageRecord
    from wsss_core.stages.first_pass import (
        FirstPass,
        KeptFirstPasses,
        first_passes_path,
        inputs_digest,
        write_first_passes,
    )
    from wsss_core.store.maps import CamRecord

    rng = np.random.default_rng(0)
    record = ImageRecord("img", "img.png", 6, 4, (2,), "train", "ab" * 32)
    cams = CamRecord("img", (2,), rng.random((1, 4, 6), dtype=np.float32))
    grown = rng.integers(0, 4, (4, 6), dtype=np.uint8)
    first = FirstPass(grown.copy(), None, (2,), 0.7)
    path = first_passes_path(tmp_path / "abc.pt")
    assert path.name == "abc.first-passes.parquet"
    assert KeptFirstPasses(path, "abc").get(record, cams, grown) is None  # none kept yet
    neighbour = FirstPass(np.zeros((4, 6), np.uint8), None, (), 1.0)  # another image's row first
    rows = [("neighbour", "0" * 32, neighbour), ("img", inputs_digest(record, cams, grown), first)]
    write_first_passes(path, "abc", rows)
    got = KeptFirstPasses(path, "abc").get(record, cams, grown)
    # The power as every label table stores it (float32), the crf shard included.
    assert got is not None and got.recovered == (2,) and got.background_power == np.float32(0.7)
    np.testing.assert_array_equal(got.labels, first.labels)
    other_cams = CamRecord("img", (2,), cams.cams + np.float32(1e-3))
    changed_file = ImageRecord("img", "img.png", 6, 4, (2,), "train", "cd" * 32)
    kept = KeptFirstPasses(path, "abc")
    assert kept.get(record, other_cams, grown) is None
    assert kept.get(record, cams, grown[::-1].copy()) is None
    assert kept.get(changed_file, cams, grown) is None
    assert (
        kept.get(ImageRecord("new", "new.png", 6, 4, (2,), "train", "ab" * 32), cams, grown) is None
    )
    assert KeptFirstPasses(path, "another head").get(record, cams, grown) is None
    path.write_bytes(b"not parquet")  # a damaged file is only recomputation
    assert KeptFirstPasses(path, "abc").get(record, cams, grown) is None


def test_a_kept_file_of_another_shape_is_only_recomputation(tmp_path) -> None:
    import pyarrow as pa

    from wsss_core.data.manifest import ImageRecord
    from wsss_core.stages.first_pass import FIRST_PASSES_STAGE, KeptFirstPasses, inputs_digest
    from wsss_core.store.maps import CamRecord
    from wsss_core.store.parquet_io import write_table

    record = ImageRecord("img", "img.png", 2, 2, (0,), "train", "ab" * 32)
    cams = CamRecord("img", (0,), np.ones((1, 2, 2), np.float32))
    grown = np.zeros((2, 2), np.uint8)
    path = tmp_path / "abc.first-passes.parquet"
    facts = {
        "stage": FIRST_PASSES_STAGE,
        "config_hash": "abc",
        "model_hash": "",
        "source_hash": "",
        "inputs": {"img": inputs_digest(record, cams, grown)},
    }
    write_table(path, pa.table({"image_id": ["img"]}), facts)  # the right file, no label column
    assert KeptFirstPasses(path, "abc").get(record, cams, grown) is None
