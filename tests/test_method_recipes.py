"""The remedy recipes (configs/methods/*.yaml): each loads as a config as it is, and a
`wsss run` with it over a tiny workspace completes, recomputing exactly the stages the
remedy changes.

One tiny demo workspace (24 images in shards of 10, 10 and 4; a resnet18 from
scratch, one epoch) labelled once with the tiny settings, saved as its
config.yaml, so `wsss run --config <recipe>` layers the recipe as it is over
them. Each test runs on a copy.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from tiny_pipeline import TINY_CAM, TINY_TRAIN

from wsss_core.config import PipelineConfig, load_config
from wsss_core.data.manifest import read_manifest
from wsss_core.model.checkpoint import load_checkpoint
from wsss_core.model.classifier import MultiDilationClassifier, OnlineErasingClassifier
from wsss_core.model.iterative_erasing import ErasingRoundsClassifier
from wsss_core.stages.image_failures import read_image
from wsss_core.stages.registry import MAP_STAGE_RUNNERS
from wsss_core.store.maps import read_cam_shard, read_label_shard
from wsss_core.store.workspace import MAP_STAGES, Workspace
from wsss_core.store.workspace_config import save_workspace_config
from wsss_core.superpixels import superpixel_labels

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "methods"
TINY: dict[str, Any] = {
    "device": "cpu",
    "shard_size": 10,
    "demo": {"num_images": 24, "image_size": 64, "seed": 5},
    "train": TINY_TRAIN,
    "cam": TINY_CAM,
    # On by default; saved off here (and then out of every lineage), so each recipe is seen
    # alone and the affinity recipe switches it on over these tiny settings.
    "affinity": {
        "enabled": False,
        "input_side": 64,
        "train_images": 12,
        "epochs": 1,
        "train_radius": 5,
    },
    "crf": {"background_powers": [1.0]},
    # Likewise on by default (since 2026-12-03) and saved off.
    "self_training": {
        "enabled": False,
        "input_side": 64,
        "train_images": 12,
        "epochs": 1,
        "width": 16,
    },
}
SHARDS, IMAGES = 3, 24
# What each recipe may change: its section and keys (nothing else differs from the defaults).
RECIPE_KEYS = {
    "stochastic": ("cam", {"stochastic_passes"}),
    "cross_image": ("cam", {"cross_image_weight"}),
    "superpixels": ("seeds", {"superpixels"}),
    "multi_dilation": ("train", {"multi_dilation"}),
    "affinity": ("affinity", set()),  # a default since 2026-12-02: the file sets what it is
    "erasing": ("train", {"online_erasing_threshold"}),
    "erasing_iterative": ("train", {"erasing_rounds"}),
    "self_training": ("self_training", set()),  # a default since 2026-12-03, likewise
}


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over``'s keys over ``base``, section by section."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def _recipe(name: str) -> dict[str, Any]:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Workspace:
    """A trained tiny workspace whose maps, masks and config.yaml a default run made."""
    from wsss_core.model.reuse import train_or_reuse
    from wsss_core.stages.ingest_stage import ingest

    config = PipelineConfig.model_validate(TINY)
    workspace = Workspace(tmp_path_factory.mktemp("recipes") / "ws")
    ingest("demo", None, workspace, demo=config.demo)
    train_or_reuse(workspace, config, log=lambda _: None, show_progress=False)
    save_workspace_config(workspace, config, "test run")
    for stage in MAP_STAGES:
        for index in range(SHARDS):
            MAP_STAGE_RUNNERS[stage].run(workspace, config, index, False, None)
    return workspace


def _copy(workspace: Workspace, root: Path) -> Workspace:
    copy = Workspace(root / "ws")
    shutil.copytree(workspace.root, copy.root)
    return copy


def test_every_recipe_is_here_and_loads_as_a_config_as_it_is():
    assert {path.stem for path in RECIPES.glob("*.yaml")} >= set(RECIPE_KEYS)
    default = PipelineConfig().model_dump()
    for name, (section, keys) in RECIPE_KEYS.items():
        dumped = load_config(RECIPES / f"{name}.yaml").model_dump()
        changed = {
            (s, k)
            for s in dumped
            if isinstance(dumped[s], dict)
            for k in dumped[s]
            if dumped[s][k] != default[s][k]
        }
        assert changed == {(section, key) for key in keys}, name
        assert (RECIPES / f"{name}.yaml").read_text().startswith("#"), "a comment says what it does"


def _run(workspace: Workspace, recipe: str, capsys) -> str:
    """`wsss run --config <recipe>`: the recipe as it is, layered over the saved tiny config."""
    from wsss_cli.main import main

    config = RECIPES / f"{recipe}.yaml"
    argv = ["run", "--workspace", str(workspace.root), "--config", str(config), "--no-publish"]
    assert main(argv) == 0
    return capsys.readouterr().out


def _recomputed(stages: dict[str, int]) -> str:
    return ", ".join(
        f"{stage} {shards} ({shards and IMAGES} images)" for stage, shards in stages.items()
    )


def _cams_recomputed_elsewhere(labelled: Workspace, workspace: Workspace, root: Path) -> dict:
    """Shard 0's CAMs computed again in a copy, in another thread of a process with another
    torch thread count (as a Dask worker is), with the config and model ``workspace``'s run used.
    """
    again = _copy(labelled, root)
    shutil.copytree(workspace.models_dir, again.models_dir, dirs_exist_ok=True)
    config = load_config(workspace.config_path)  # what the run used, saved by it
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else 1)
    try:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(MAP_STAGE_RUNNERS["cam"].run, again, config, 0, False, None).result()
    finally:
        torch.set_num_threads(threads)
    return {r.image_id: r.cams for r in read_cam_shard(again.shard_path("cam", 0))}


def test_the_stochastic_recipe_runs_and_recomputes_cam_and_below(
    labelled, tmp_path, capsys, prefect_harness
):
    workspace = _copy(labelled, tmp_path)
    out = _run(workspace, "stochastic", capsys)
    assert "(reused)" in out
    assert f"shards recomputed: {_recomputed(dict.fromkeys(MAP_STAGES, SHARDS))}" in out
    assert "mIoU per stage" in out
    before = {r.image_id: r.cams for r in read_cam_shard(labelled.shard_path("cam", 0))}
    after = {r.image_id: r.cams for r in read_cam_shard(workspace.shard_path("cam", 0))}
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[i], after[i]) for i in before)
    # The same shard computed again elsewhere holds bit-identical maps.
    config = load_config(workspace.config_path)  # what the run used, saved by it
    assert config.cam.stochastic_passes == _recipe("stochastic")["cam"]["stochastic_passes"]
    recomputed = _cams_recomputed_elsewhere(labelled, workspace, tmp_path / "again")
    for image_id, cams in after.items():
        np.testing.assert_array_equal(recomputed[image_id], cams, err_msg=image_id)


def test_the_cross_image_recipe_runs_and_recomputes_cam_and_below(
    labelled, tmp_path, capsys, prefect_harness
):
    workspace = _copy(labelled, tmp_path)
    out = _run(workspace, "cross_image", capsys)
    assert "(reused)" in out
    assert f"shards recomputed: {_recomputed(dict.fromkeys(MAP_STAGES, SHARDS))}" in out
    assert "mIoU per stage" in out
    config = load_config(workspace.config_path)  # what the run used, saved by it
    assert config.cam.cross_image_weight == _recipe("cross_image")["cam"]["cross_image_weight"]
    before = {r.image_id: r.cams for r in read_cam_shard(labelled.shard_path("cam", 0))}
    after = {r.image_id: r.cams for r in read_cam_shard(workspace.shard_path("cam", 0))}
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[i], after[i]) for i in before)
    # The same shard computed again elsewhere holds bit-identical maps.
    recomputed = _cams_recomputed_elsewhere(labelled, workspace, tmp_path / "again")
    for image_id, cams in after.items():
        np.testing.assert_array_equal(recomputed[image_id], cams, err_msg=image_id)
    # The next run with the recipe reuses every map.
    out = _run(workspace, "cross_image", capsys)
    assert f"shards recomputed: {_recomputed(dict.fromkeys(MAP_STAGES, 0))}" in out


def test_the_superpixels_recipe_runs_and_recomputes_seeds_and_below(
    labelled, tmp_path, capsys, prefect_harness
):
    workspace = _copy(labelled, tmp_path)
    out = _run(workspace, "superpixels", capsys)
    stages = {"cam": 0, "seeds": SHARDS, "grown": SHARDS, "crf": SHARDS}
    assert f"shards recomputed: {_recomputed(stages)}" in out
    # Seeds threshold pooled maps: one label per superpixel.
    settings = load_config(workspace.config_path).seeds  # what the run used, saved by it
    assert settings.superpixels == _recipe("superpixels")["seeds"]["superpixels"]
    records = {r.image_id: r for r in read_manifest(workspace).records}
    for row in read_label_shard(workspace.shard_path("seeds", 0)):
        pixels = read_image(records[row.image_id])
        segments = superpixel_labels(pixels, settings.superpixels, settings.superpixel_compactness)
        for label in np.unique(segments):
            assert len(np.unique(row.labels[segments == label])) == 1, row.image_id


def _retrains_then_reuses(labelled, tmp_path: Path, capsys, recipe: str):
    """Run ``recipe`` twice over a copy: the first run retrains and recomputes every stage,
    with CAMs bit-identical when recomputed elsewhere; the second reuses it all.

    Returns the classifier the first run trained (rebuilt from what its file records).
    """
    workspace = _copy(labelled, tmp_path)
    out = _run(workspace, recipe, capsys)
    assert "(trained)" in out
    assert f"shards recomputed: {_recomputed(dict.fromkeys(MAP_STAGES, SHARDS))}" in out
    assert "mIoU per stage" in out
    classifier = load_checkpoint(workspace.model_path)
    after = {r.image_id: r.cams for r in read_cam_shard(workspace.shard_path("cam", 0))}
    recomputed = _cams_recomputed_elsewhere(labelled, workspace, tmp_path / "again")
    for image_id, cams in after.items():
        np.testing.assert_array_equal(recomputed[image_id], cams, err_msg=image_id)
    # The next run with the recipe keeps that classifier and every map, as for the defaults.
    out = _run(workspace, recipe, capsys)
    assert "(reused)" in out
    assert f"shards recomputed: {_recomputed(dict.fromkeys(MAP_STAGES, 0))}" in out
    return classifier


def test_the_multi_dilation_recipe_retrains_in_the_run_and_recomputes_every_stage(
    labelled, tmp_path, capsys, prefect_harness
):
    classifier = _retrains_then_reuses(labelled, tmp_path, capsys, "multi_dilation")
    dilations = tuple(_recipe("multi_dilation")["train"]["multi_dilation"])
    assert isinstance(classifier.model, MultiDilationClassifier)
    assert classifier.model.head.dilations == dilations
    assert tuple(classifier.config["multi_dilation"]) == dilations


def test_the_erasing_recipe_retrains_in_the_run_and_recomputes_every_stage(
    labelled, tmp_path, capsys, prefect_harness
):
    classifier = _retrains_then_reuses(labelled, tmp_path, capsys, "erasing")
    threshold = _recipe("erasing")["train"]["online_erasing_threshold"]
    assert isinstance(classifier.model, OnlineErasingClassifier)
    assert classifier.model.head.threshold == threshold


def test_the_iterative_erasing_recipe_trains_every_round_in_the_run(
    labelled, tmp_path, capsys, prefect_harness
):
    classifier = _retrains_then_reuses(labelled, tmp_path, capsys, "erasing_iterative")
    rounds = _recipe("erasing_iterative")["train"]["erasing_rounds"]
    assert isinstance(classifier.model, ErasingRoundsClassifier)
    assert len(classifier.model.rounds) == rounds + 1


def test_the_affinity_recipe_runs_and_recomputes_affinity_and_crf(
    labelled, tmp_path, capsys, prefect_harness
):
    """Over the saved tiny affinity settings (test_orchestration tests the stage itself)."""
    workspace = _copy(labelled, tmp_path)
    out = _run(workspace, "affinity", capsys)
    assert "(reused)" in out
    stages = {"cam": 0, "affinity": SHARDS, "seeds": 0, "grown": 0, "crf": SHARDS}
    assert f"shards recomputed: {_recomputed(stages)}" in out
    assert load_config(workspace.config_path).affinity.enabled
    assert len(list((workspace.models_dir / "affinity").glob("*.pt"))) == 1


def test_the_self_training_recipe_runs_and_recomputes_only_crf(
    labelled, tmp_path, capsys, prefect_harness
):
    """Its head trains once, in the run; a second run reuses it and recomputes nothing."""
    workspace = _copy(labelled, tmp_path)
    out = _run(workspace, "self_training", capsys)
    stages = {"cam": 0, "seeds": 0, "grown": 0, "crf": SHARDS}
    assert f"shards recomputed: {_recomputed(stages)}" in out
    assert load_config(workspace.config_path).self_training.enabled
    heads = list((workspace.models_dir / "segmentation").glob("*.pt"))
    assert len(heads) == 1
    trained = heads[0].stat().st_mtime_ns
    out = _run(workspace, "self_training", capsys)
    assert f"shards recomputed: {_recomputed(dict.fromkeys(stages, 0))}" in out
    assert heads[0].stat().st_mtime_ns == trained
    from wsss_cli.main import main

    assert main(["status", "--workspace", str(workspace.root)]) == 0
    status = capsys.readouterr().out
    assert f"self-training head: {heads[0].relative_to(workspace.root)}, current" in status


def test_the_self_training_head_leaves_out_a_bad_image_and_never_reads_stale_maps(
    labelled, tmp_path, monkeypatch
):
    from wsss_core.model.segmentation_head import head_lineage, load_segmentation_head
    from wsss_core.stages import self_training_stage
    from wsss_core.stages.common import checked_model_hash
    from wsss_core.stages.image_failures import ImageReadError

    workspace = _copy(labelled, tmp_path)
    config = PipelineConfig.model_validate(_merged(TINY, _recipe("self_training")))
    bad = read_manifest(workspace).records[0]  # the first of the 12 training images

    def read(record):
        if record.image_id == bad.image_id:
            raise ImageReadError(f"{record.uri}: OSError: truncated")
        return read_image(record)

    monkeypatch.setattr(self_training_stage, "read_image", read)
    model = checked_model_hash(workspace)
    lines: list[str] = []
    trained, _ = self_training_stage.ensure_segmentation_head(
        workspace, config, model, lines.append
    )
    assert trained
    path = workspace.segmentation_head_path(head_lineage(config, model))
    assert load_segmentation_head(path).images == 11
    assert any(bad.uri in line and "left out" in line for line in lines)
    # Grown regions of another grow setting are not this config's: nothing to learn from.
    other = PipelineConfig.model_validate(
        _merged(_merged(TINY, _recipe("self_training")), {"grow": {"fg_threshold": 0.7}})
    )
    with pytest.raises(ValueError, match="no labelled image"):
        self_training_stage.ensure_segmentation_head(workspace, other, model)


def test_the_best_recipe_combines_measured_recipes_and_runs(
    labelled, tmp_path, capsys, prefect_harness
):
    """best.yaml: only settings some single recipe measured, and `wsss run` takes them all."""
    best = _recipe("best")
    singles = [_recipe(name) for name in RECIPE_KEYS]
    settings = [(s, k, v) for s, values in best.items() for k, v in values.items()]
    assert len(settings) >= 1
    for section, key, value in settings:
        assert any(r.get(section, {}).get(key) == value for r in singles), f"{section}.{key}"
    workspace = _copy(labelled, tmp_path)
    out = _run(workspace, "best", capsys)
    assert "mIoU per stage" in out
    used = load_config(workspace.config_path)  # what the run used, saved by it
    for section, key, value in settings:
        assert getattr(getattr(used, section), key) == value, f"{section}.{key}"


def test_tune_scores_every_candidate_with_the_heads_the_run_learnt(
    labelled, tmp_path, capsys, prefect_harness
):
    """No head is trained on the tuning images; the maps made with the run's heads say so."""
    from wsss_core.stages.tune import TUNE_DIR, tune_workspace
    from wsss_core.store.workspace_config import load_workspace_config
    from wsss_core.tuning.space import SEARCH_SPACE

    workspace = _copy(labelled, tmp_path)
    _run(workspace, "best", capsys)
    config = load_workspace_config(workspace, None)
    mix = next(grid for grid in SEARCH_SPACE if grid.name == "self-training mix")
    result = tune_workspace(workspace, config, 600, grids=(mix,))
    assert len(result.search.trials) == len(mix.values)  # the current mix is one of them
    tune_dir = workspace.root / TUNE_DIR
    assert not list(tune_dir.rglob("*.pt"))
    affinity_head = next((workspace.models_dir / "affinity").glob("*.pt"))
    head = next((workspace.models_dir / "segmentation").glob("*.pt"))
    digests = [hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in (affinity_head, head)]
    crf_dirs = {p.name for p in tune_dir.glob("*/shards-*/maps/crf/*")}
    walk_dirs = {p.name for p in tune_dir.glob("*/shards-*/maps/affinity/*")}
    with_head = {n for n in crf_dirs if n.endswith(f"-a{digests[0]}-s{digests[1]}")}
    assert with_head  # and the candidate without the head, its maps without its digest:
    assert all(n.endswith(f"-a{digests[0]}") for n in crf_dirs - with_head)
    assert walk_dirs and all(n.endswith(f"-a{digests[0]}") for n in walk_dirs)
    head.unlink()
    with pytest.raises(ValueError, match=re.escape(f"{head}: no self-training head")):
        tune_workspace(workspace, config, 600, grids=(mix,))


def test_an_unreadable_image_is_that_images_seeds_failure(labelled, tmp_path):
    """With superpixels the seeds stage reads the image: a bad file costs that image only."""
    workspace = _copy(labelled, tmp_path)
    config = PipelineConfig.model_validate(_merged(TINY, _recipe("superpixels")))
    victim = read_manifest(workspace).shards(config.shard_size)[0][0]
    image = Path(victim.uri)  # the copy's manifest names the fixture's files
    pixels = image.read_bytes()
    try:
        image.write_bytes(b"not an image")
        outcome = MAP_STAGE_RUNNERS["seeds"].run(workspace, config, 0, False, None)
    finally:
        image.write_bytes(pixels)
    assert [failure.image_id for failure in outcome.failed] == [victim.image_id]
    assert outcome.computed_images == 9


def test_with_cross_image_affinity_a_changed_shard_is_computed_whole(labelled, tmp_path):
    """An image's maps depend on its group mates: an image coming back recomputes its shard."""
    workspace = _copy(labelled, tmp_path)
    config = PipelineConfig.model_validate(_merged(TINY, _recipe("cross_image")))
    victim = read_manifest(workspace).shards(config.shard_size)[0][1]
    image = Path(victim.uri)  # the copy's manifest names the fixture's files
    pixels = image.read_bytes()
    try:
        image.write_bytes(b"not an image")
        outcome = MAP_STAGE_RUNNERS["cam"].run(workspace, config, 0, False, None)
        assert [failure.image_id for failure in outcome.failed] == [victim.image_id]
        assert outcome.computed_images == 9
    finally:
        image.write_bytes(pixels)  # a new size and mtime: the failure no longer holds
    outcome = MAP_STAGE_RUNNERS["cam"].run(workspace, config, 0, False, None)
    assert outcome.failed == () and outcome.computed_images == 10
    fresh = _copy(labelled, tmp_path / "fresh")
    MAP_STAGE_RUNNERS["cam"].run(fresh, config, 0, False, None)
    expected = {r.image_id: r.cams for r in read_cam_shard(fresh.shard_path("cam", 0))}
    got = {r.image_id: r.cams for r in read_cam_shard(workspace.shard_path("cam", 0))}
    assert got.keys() == expected.keys()
    for image_id, cams in expected.items():
        np.testing.assert_array_equal(got[image_id], cams, err_msg=image_id)
