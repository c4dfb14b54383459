"""The affinity walk and its boundary head: the library parts, no workspace."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import (
    CRF_HASH_WITHOUT_AFFINITY,
    EARLIER_CAM_SCALES,
    EARLIER_HASHES,
    tiny_features,
)

from wsss_core.affinity import (
    BoundaryHead,
    WalkSettings,
    affinity_loss,
    feature_pyramid,
    neighbour_offsets,
    path_affinities,
    path_offsets,
    random_walk,
    sampled_offsets,
    transition_matrix,
    walk_cams,
)
from wsss_core.config import AffinityConfig, PipelineConfig, stage_config_hash
from wsss_core.data.manifest import ImageRecord
from wsss_core.model.affinity_head import (
    _cell_labels,
    _label_size,
    confident_cells,
    head_lineage,
    train_head,
    training_records,
)
from wsss_core.model.classifier import build_classifier
from wsss_core.store.maps import CamRecord

SETTINGS = WalkSettings(radius=5, beta=20.0, steps=32)


def _split_by_an_edge(size: int = 24) -> np.ndarray:
    """A boundary map: one vertical line of boundary cells down the middle."""
    boundary = np.full((size, size), 0.02, np.float32)
    boundary[:, size // 2] = 1.0
    return boundary


def test_the_walk_fills_the_seeded_region_and_stops_at_the_edge() -> None:
    boundary = _split_by_an_edge()
    scores = np.zeros((1, 24, 24), np.float32)
    scores[0, 10:13, 3:6] = 1.0  # a CAM peak in the left region only
    affinities = [a[0].numpy() for a in path_affinities(torch.from_numpy(boundary)[None], 5)]
    walked = random_walk(scores, transition_matrix(affinities, (24, 24), SETTINGS), 32)[0]
    left, right = walked[:, :11], walked[:, 13:]
    assert left.min() > 0.2 * left.max()  # the whole left region got the score
    assert right.max() < 1e-3 * left.max()  # nothing crossed the edge


def test_walked_cams_cover_the_region_at_full_resolution() -> None:
    boundary = _split_by_an_edge()
    cams = np.zeros((1, 96, 96), np.float32)
    cams[0, 40:52, 12:24] = 1.0  # full resolution, 4x the grid
    walked = walk_cams(cams, boundary, SETTINGS, (24, 24))
    assert walked.shape == (1, 96, 96)
    assert walked.max() == pytest.approx(1.0)
    assert (walked[0, :, :40] > 0.3).mean() > 0.95
    assert (walked[0, :, 56:] < 0.01).all()


def test_the_transition_matrix_is_row_stochastic_and_symmetric_in_support() -> None:
    rng = np.random.default_rng(0)
    boundary = torch.from_numpy(rng.random((1, 9, 11)).astype(np.float32))
    affinities = [a[0].numpy() for a in path_affinities(boundary, 4)]
    matrix = transition_matrix(affinities, (9, 11), WalkSettings(radius=4))
    assert np.allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0)
    support = matrix.toarray() > 0
    assert (support == support.T).all()


def test_the_transition_matrix_is_the_normalised_powered_affinities() -> None:
    """Its cached sparsity pattern puts every affinity where a dense matrix would have it."""
    rng = np.random.default_rng(1)
    settings = WalkSettings(radius=3, beta=2.0)
    for shape in ((5, 7), (6, 4)):
        boundary = torch.from_numpy(rng.random((1, *shape)).astype(np.float32))
        affinities = [a[0].numpy() for a in path_affinities(boundary, settings.radius)]
        height, width = shape
        dense = np.eye(height * width)
        for affinity, (dy, dx) in zip(affinities, neighbour_offsets(settings.radius), strict=True):
            x0 = max(0, -dx)
            for (y, x), value in np.ndenumerate(affinity):
                i, j = y * width + x + x0, (y + dy) * width + x + x0 + dx
                dense[i, j] = dense[j, i] = float(value) ** settings.beta
        dense /= dense.sum(axis=1, keepdims=True)
        matrix = transition_matrix(affinities, shape, settings)
        assert np.allclose(matrix.toarray(), dense, rtol=1e-12, atol=0)


def test_the_walk_does_not_depend_on_the_thread_count() -> None:
    rng = np.random.default_rng(2)
    boundary = torch.from_numpy(rng.random((1, 20, 30)).astype(np.float32) ** 4)
    affinities = [a[0].numpy() for a in path_affinities(boundary, 5)]
    transition = transition_matrix(affinities, (20, 30), SETTINGS)
    scores = rng.random((3, 20, 30)).astype(np.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = random_walk(scores, transition, 32)
        torch.set_num_threads(2)
        two = random_walk(scores, transition, 32)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(one, two)
    dense = np.linalg.matrix_power(transition.toarray(), 32)
    expected = (dense @ scores.reshape(3, -1).T.astype(np.float64)).T.reshape(3, 20, 30)
    assert np.allclose(one, expected, rtol=1e-5)


def test_offsets_and_paths() -> None:
    offsets = neighbour_offsets(5)
    assert len(offsets) == len(set(offsets)) == 34  # each unordered pair once
    assert all((-dy, -dx) not in offsets for dy, dx in offsets)
    assert path_offsets((0, 3)) == ((0, 0), (0, 1), (0, 2), (0, 3))
    assert (0, 0) in path_offsets((3, -2)) and (3, -2) in path_offsets((3, -2))


def test_sampled_offsets_are_a_seeded_subset_and_the_loss_counts_only_them() -> None:
    offsets = neighbour_offsets(10)
    picked = sampled_offsets(10, 0.25, np.random.default_rng(3))
    assert len(picked) == round(0.25 * len(offsets)) and set(picked) <= set(offsets)
    assert list(picked) == sorted(picked, key=offsets.index)  # in the full list's order
    assert picked == sampled_offsets(10, 0.25, np.random.default_rng(3))
    assert picked != sampled_offsets(10, 0.25, np.random.default_rng(4))
    assert sampled_offsets(10, 1.0, np.random.default_rng(3)) == offsets
    assert len(sampled_offsets(10, 1e-6, np.random.default_rng(3))) == 1

    rng = np.random.default_rng(0)
    boundary = torch.from_numpy(rng.random((2, 12, 12)).astype(np.float32))
    every = path_affinities(boundary, 4)
    some = sampled_offsets(4, 0.5, np.random.default_rng(1))
    chosen = path_affinities(boundary, 4, some)
    full_index = {offset: i for i, offset in enumerate(neighbour_offsets(4))}
    assert all(torch.equal(a, every[full_index[o]]) for a, o in zip(chosen, some, strict=True))
    # Labels change from row to row only, and no boundary anywhere: every pair
    # across rows is wrongly joined, every pair within a row rightly. Over the
    # within-row offsets alone the loss is zero; over all of them it is not.
    rows = torch.arange(12)[None, :, None].expand(1, 12, 12) % 2
    flat = torch.zeros((1, 12, 12))
    within_rows = tuple(o for o in neighbour_offsets(4) if o[0] == 0)
    assert affinity_loss(path_affinities(flat, 4, within_rows), rows, 4, within_rows) == 0
    assert affinity_loss(path_affinities(flat, 4), rows, 4) > 1


def test_the_loss_rewards_boundaries_between_labels_only() -> None:
    labels = torch.zeros((1, 8, 8), dtype=torch.int64)
    labels[:, :, 4:] = 1
    labels[:, 0, 0] = 255  # unknown cells count in no pair
    cut = torch.full((1, 8, 8), 0.01)
    cut[:, :, 4] = 0.99  # a boundary where the labels change
    flat = torch.full((1, 8, 8), 0.01)
    loss_cut = affinity_loss(path_affinities(cut, 3), labels, 3)
    loss_flat = affinity_loss(path_affinities(flat, 3), labels, 3)
    assert loss_cut < loss_flat


def test_the_head_learns_an_edge_it_is_shown() -> None:
    """A few steps on one synthetic pyramid: the loss falls (the training loop's core)."""
    torch.manual_seed(0)
    level = torch.zeros((1, 4, 16, 16))
    level[:, :, :, 8:] = 1.0  # features change across the middle
    labels = torch.zeros((1, 16, 16), dtype=torch.int64)
    labels[:, :, 9:] = 1
    labels[:, :, 7:9] = 255
    head = BoundaryHead([4], width=8)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        loss = affinity_loss(path_affinities(head([level], (16, 16)), 5), labels, 5)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    with torch.no_grad():
        boundary = head([level], (16, 16))[0]
    assert boundary[:, 7:9].mean() > 5 * boundary[:, :4].mean()  # on the edge, not off it


def test_the_feature_pyramid_has_one_level_per_stride() -> None:
    model = build_classifier("mobilenet_v2", 3, output_stride=16).eval()
    with torch.no_grad():
        levels = feature_pyramid(model.features, torch.zeros((1, 3, 64, 64)))
    assert [level.shape[-1] for level in levels] == [16, 8, 4]  # strides 4, 8, 16


def _cams_with_a_band() -> np.ndarray:
    """A confident core (10:22) inside a band (4:28) of CAM 0.1: neither sure object nor not."""
    cams = np.full((1, 32, 32), 0.0, np.float32)
    cams[0, 4:28, 4:28] = 0.1
    cams[0, 10:22, 10:22] = 1.0
    return cams


def test_confident_cells_follow_the_images_edges() -> None:
    image = np.full((32, 32, 3), 30, np.uint8)
    image[8:24, 8:24] = 200  # the object is larger than its confident CAM core
    labels = confident_cells(image, _cams_with_a_band(), (8, 8), AffinityConfig())
    assert (labels[2:6, 2:6] == 1).all()  # the whole object, not only the CAM's core
    assert (labels[[0, 7], :] == 0).all()  # far background


def test_training_images_spread_over_the_manifest() -> None:
    class Row:
        def __init__(self, index: int) -> None:
            self.image_id, self.labels = f"i{index}", (0,) if index % 5 else ()

    rows = [Row(i) for i in range(50)]
    picked = training_records(rows, 8)
    assert len(picked) == 8 and all(r.labels for r in picked)
    assert picked[0].image_id == "i1" and picked[-1].image_id == "i49"
    assert len(training_records(rows, 100)) == 40  # every labelled one


def test_a_frame_filling_object_keeps_its_mask() -> None:
    """An object filling the frame, its CAM on one part: the CAM alone is flooded by
    background at every power; its walk (no outline inside the frame) restores it."""
    from wsss_core.background import refine_best_background
    from wsss_core.crf import refine_with_crf
    from wsss_core.probability import probability_map
    from wsss_core.recovery import recover_vanished_classes

    rng = np.random.default_rng(1)
    size = 64
    stripes = (np.arange(size) // 4 % 2)[None, :].repeat(size, 0)
    image = np.stack([150 + 40 * stripes, 90 + 30 * stripes, 60 + 0 * stripes], -1)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    cams = np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / (2 * 8.0**2))[None].astype(np.float32)
    from_cams = refine_best_background(image, cams, [3], (0.5, 0.7, 1.0, 1.4)).result.labels
    assert (from_cams == 4).mean() < 0.1
    no_outline = np.full((16, 16), 0.02, np.float32)
    walked = walk_cams(cams, no_outline, SETTINGS, (16, 16))
    by_walk = refine_with_crf(image, probability_map(walked, 1.0), [3]).labels
    restored, recovered = recover_vanished_classes(from_cams, by_walk, [3], 0.1)
    assert recovered == (3,)
    assert (restored == 4).mean() > 0.9


def test_labels_of_an_image_smaller_than_the_grid_stay_unknown_or_its_own():
    """The label CRF never runs below the walk grid, and a cell without pixels is unknown."""
    assert _label_size((128, 128), (256, 256)) == (128, 128)  # not upsampled
    assert _label_size((40, 40), (256, 256)) == (256, 256)  # 40 px < the 64-cell grid
    assert _label_size((512, 512), (256, 256)) == (256, 256)
    unknown = np.full((40, 40), 255, np.uint8)
    assert (_cell_labels(unknown, (64, 64), 2) == 255).all()


def _two_square_images(tmp_path) -> list[tuple[ImageRecord, CamRecord]]:
    """Two 32-px images of a bright square, each with a CAM on the square's core."""
    pairs = []
    for index, corner in enumerate((4, 12)):
        pixels = np.full((32, 32, 3), 40, np.uint8)
        pixels[corner : corner + 16, corner : corner + 16] = 220
        path = tmp_path / f"square{index}.png"
        Image.fromarray(pixels).save(path)
        cams = np.zeros((1, 32, 32), np.float32)
        cams[0, corner + 4 : corner + 12, corner + 4 : corner + 12] = 1.0
        record = ImageRecord(f"square{index}", str(path), 32, 32, (0,), "train", "0" * 64)
        pairs.append((record, CamRecord(record.image_id, (0,), cams, None)))
    return pairs


def _trained_state(pairs, **settings) -> dict[str, torch.Tensor]:
    config = AffinityConfig(input_side=64, epochs=2, batch_size=1, **settings)
    head, _ = train_head(tiny_features(), pairs, config)
    return head.state_dict()


def test_head_training_is_seeded_and_its_pair_share_is_honoured(tmp_path) -> None:
    """Same settings, same head; another share of the pair offsets, another head."""
    pairs = _two_square_images(tmp_path)
    quarter = _trained_state(pairs, train_pair_share=0.25)
    again = _trained_state(pairs, train_pair_share=0.25)
    every = _trained_state(pairs, train_pair_share=1.0)
    assert all(torch.equal(quarter[name], again[name]) for name in quarter)
    assert not all(torch.equal(quarter[name], every[name]) for name in quarter)


def test_the_head_lineage_follows_training_settings_not_the_walks() -> None:
    config = PipelineConfig()
    lineage = head_lineage(config, "model")
    walk = config.model_copy(update={"affinity": config.affinity.model_copy(update={"beta": 8.0})})
    share = config.model_copy(
        update={"affinity": config.affinity.model_copy(update={"train_pair_share": 0.5})}
    )
    assert head_lineage(walk, "model") == lineage
    assert head_lineage(share, "model") != lineage
    assert head_lineage(config, "other model") != lineage


def test_switching_the_stage_off_gives_back_the_earlier_final_mask_hash() -> None:
    """Workspaces that keep the stage off keep the final masks made before it was a default."""
    config = PipelineConfig.model_validate(  # as then
        {
            "self_training": {"enabled": False},
            "crf": {"background_score": "edge"},
            "cam": {"scales": EARLIER_CAM_SCALES},
        }
    )
    off = config.model_copy(
        update={"affinity": config.affinity.model_copy(update={"enabled": False})}
    )
    assert stage_config_hash(off, "crf") == CRF_HASH_WITHOUT_AFFINITY
    for stage in ("train", "cam", "seeds", "grown"):
        assert stage_config_hash(off, stage) == EARLIER_HASHES[stage]
