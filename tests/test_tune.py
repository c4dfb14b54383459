"""`wsss tune`: a planted best setting is found, the held-out part stays unseen while
searching, the split is stable, the budget holds, --apply changes only the tuned keys,
and too few true masks are refused."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_pipeline import NO_SELF_TRAINING, TINY_CAM, TINY_TRAIN, label_run

from wsss_core.config import load_config
from wsss_core.data.demo import generate_demo_dataset
from wsss_core.data.images import save_label_map
from wsss_core.data.manifest import read_manifest, write_manifest
from wsss_core.data.sources import IngestOptions
from wsss_core.metrics import mean_iou
from wsss_core.model.reuse import train_or_reuse
from wsss_core.stages.evaluate_stage import thresholded_cam
from wsss_core.stages.ingest_stage import ingest
from wsss_core.stages.tune import TUNE_DIR, search_settings, tune_workspace
from wsss_core.stages.tune_output import apply_to_workspace, nested, write_tuned_file
from wsss_core.store.comparison import ComparisonLayout
from wsss_core.store.maps import iter_stage_cams
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import load_workspace_config, save_workspace_config
from wsss_core.tuning.scores import ImageScores, estimate, paired_gain
from wsss_core.tuning.space import SEARCH_SPACE, grids_for, with_changes
from wsss_core.tuning.split import MIN_TRUE_MASKS, TooFewTrueMasks, split_true_masks
from wsss_core.tuning.truth import GROUND_TRUTH, TrueMask, true_masks

IMAGES = 40
PLANTED = 0.4  # the cam threshold the planted true masks were made with
CONFIG = {
    "shard_size": 20,
    "device": "cpu",
    "train": TINY_TRAIN,
    "cam": TINY_CAM,
    "self_training": NO_SELF_TRAINING,
}
CAM_GRID = next(grid for grid in SEARCH_SPACE if grid.name == "cam threshold")


def _masks(count: int, classes: int = 4) -> list[TrueMask]:
    return [
        TrueMask(f"img{i:03d}", f"/gt/{i}.png", GROUND_TRUTH, (i % classes, (i * 7) % classes))
        for i in range(count)
    ]


# --- the split --------------------------------------------------------------------------


def test_the_split_is_stable_for_a_seed_and_covers_every_class_in_both_parts():
    masks = _masks(40)
    first, again = split_true_masks(masks, seed=3), split_true_masks(list(reversed(masks)), 3)
    assert {m.image_id for m in first.held_out} == {m.image_id for m in again.held_out}
    other = split_true_masks(masks, seed=4)
    assert {m.image_id for m in other.held_out} != {m.image_id for m in first.held_out}
    tuning, held = {m.image_id for m in first.tuning}, {m.image_id for m in first.held_out}
    assert not tuning & held and len(tuning | held) == 40
    assert abs(len(held) - 20) <= 1
    for class_id in range(4):
        assert any(class_id in m.labels for m in first.tuning)
        assert any(class_id in m.labels for m in first.held_out)


def test_too_few_true_masks_are_refused_saying_the_minimum_and_why():
    with pytest.raises(TooFewTrueMasks, match=f"at least {MIN_TRUE_MASKS}") as raised:
        split_true_masks(_masks(MIN_TRUE_MASKS - 1))
    assert "held out" in str(raised.value)
    split_true_masks(_masks(MIN_TRUE_MASKS))  # the minimum itself is enough


# --- the figures ------------------------------------------------------------------------


def _scores(values: list[tuple[int, int]]) -> ImageScores:
    """Images of one foreground class: (true positives, misses) pixels each."""
    matrices = np.zeros((len(values), 2, 3), np.int64)
    for i, (hit, miss) in enumerate(values):
        matrices[i, 0, 0] = 100
        matrices[i, 1, 1], matrices[i, 1, 0] = hit, miss
    return ImageScores(tuple(f"i{i}" for i in range(len(values))), matrices)


def test_the_bootstrap_interval_holds_the_figure_and_narrows_with_more_images():
    few = _scores([(80, 20), (40, 60), (90, 10), (60, 40)])
    many = _scores([(80, 20), (40, 60), (90, 10), (60, 40)] * 25)
    small, large = estimate(few, seed=1), estimate(many, seed=1)
    assert small.low <= small.miou <= small.high
    assert np.isclose(small.miou, large.miou)
    assert large.high - large.low < small.high - small.low
    assert estimate(few, seed=1) == small  # seeded
    gain = paired_gain(few, few)
    assert (gain.miou, gain.low, gain.high) == (0.0, 0.0, 0.0)
    assert np.isclose(float(mean_iou(few.matrices.sum(0))), small.miou)


def test_a_grid_offers_the_current_value_first_and_only_valid_settings():
    config = load_config(None)
    seeds = next(grid for grid in SEARCH_SPACE if grid.name == "seed thresholds")
    candidates = list(seeds.candidates(config))
    assert candidates[0] == {"seeds.fg_threshold": 0.9, "seeds.bg_threshold": 0.3}
    assert len({tuple(c.values()) for c in candidates}) == len(candidates)
    assert with_changes(config, {"seeds.fg_threshold": 0.2, "seeds.bg_threshold": 0.3}) is None


# --- the search on a real workspace -----------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory, prefect_harness):
    """A tiny trained workspace whose true masks are its CAMs thresholded at 0.4."""
    root = tmp_path_factory.mktemp("tune")
    source = generate_demo_dataset(root / "source", IMAGES, image_size=64, seed=11).root
    workspace = Workspace(root / "workspace")
    ingest("folder", source, workspace, IngestOptions())
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    config = load_config(config_file)
    train_or_reuse(workspace, config, log=lambda _: None, show_progress=False)
    state, _ = label_run(workspace.root, config_file)
    assert state.is_completed()
    records = read_manifest(workspace).by_id()
    for cams in iter_stage_cams(workspace.maps_dir("cam")):
        save_label_map(Path(records[cams.image_id].gt_uri), thresholded_cam(cams, PLANTED))
    return {"workspace": workspace, "config": load_workspace_config(workspace, None)}


def test_tune_finds_the_planted_threshold_and_reports_it_on_held_out_images(planted, tmp_path):
    result = tune_workspace(planted["workspace"], planted["config"], 600, grids=(CAM_GRID,))
    assert result.search.changes == {"cam.threshold": PLANTED}
    assert result.search.finished
    assert len(result.split.tuning) + len(result.split.held_out) == IMAGES
    # The final masks do not read cam.threshold: the held-out figure is unchanged.
    assert result.held_out.gain.miou == 0.0
    assert result.held_out.default.images == len(result.split.held_out)
    out = write_tuned_file(result, tmp_path / "tuned.yaml")
    assert yaml.safe_load(out.read_text()) == {"cam": {"threshold": PLANTED}}
    assert "true masks" in out.read_text().splitlines()[0]
    assert load_config(out).cam.threshold == PLANTED


def test_the_search_reads_no_true_mask_of_a_held_out_image(planted, monkeypatch):
    import wsss_core.tuning.scores as scores

    workspace, config = planted["workspace"], planted["config"]
    split = split_true_masks(true_masks(workspace, read_manifest(workspace)))
    read: list[str] = []
    real = scores.load_label_map

    def recording(path):
        read.append(str(path))
        return real(path)

    monkeypatch.setattr(scores, "load_label_map", recording)
    layout = ComparisonLayout(workspace.root / TUNE_DIR)
    search_settings(
        workspace, layout, workspace.model_path, config, split.tuning, 600, grids=(CAM_GRID,)
    )
    assert read and set(read) <= {mask.path for mask in split.tuning}
    assert not set(read) & {mask.path for mask in split.held_out}


def test_the_budget_is_honoured(planted):
    workspace, config = planted["workspace"], planted["config"]
    started = time.perf_counter()
    result = tune_workspace(workspace, config, 0.5, grids=SEARCH_SPACE)
    assert not result.search.finished
    # At most the candidate running when time ran out, then the held-out check.
    assert len(result.search.trials) <= 2
    assert time.perf_counter() - started < 120


def test_apply_changes_only_the_tuned_keys(planted, tmp_path):
    workspace = Workspace(tmp_path / "ws")
    shutil.copytree(planted["workspace"].root, workspace.root)
    before = load_workspace_config(workspace, None)
    result = tune_workspace(workspace, before, 600, grids=(CAM_GRID,))
    apply_to_workspace(workspace, result)
    after = load_workspace_config(workspace, None)
    assert after.cam.threshold == PLANTED
    expected = before.model_dump()
    expected["cam"]["threshold"] = PLANTED
    assert after.model_dump() == expected
    text = workspace.config_path.read_text()
    assert "Tuned by `wsss tune`" in text and "Held-out final mIoU" in text
    assert "[tuned]" in text


def test_no_true_mask_gives_the_clear_refusal_from_the_cli(planted, tmp_path, capsys):
    from wsss_cli.main import main

    workspace = Workspace(tmp_path / "ws")
    shutil.copytree(planted["workspace"].root, workspace.root)
    manifest = read_manifest(workspace)  # the copy's masks are the fixture's: keep the files
    write_manifest(
        workspace,
        [replace(r, gt_uri=None) for r in manifest.all_rows],
        manifest.class_names,
        manifest.source,
    )
    save_workspace_config(workspace, planted["config"], "test")
    code = main(["tune", "--workspace", str(workspace.root)])
    assert code == 1
    assert f"tuning needs at least {MIN_TRUE_MASKS}" in capsys.readouterr().err


def test_nested_turns_dotted_keys_into_sections():
    assert nested({"crf.bilateral_srgb": 7.0, "crf.background_powers": (0.5, 1.0)}) == {
        "crf": {"bilateral_srgb": 7.0, "background_powers": [0.5, 1.0]}
    }


def test_the_walk_and_the_self_training_mix_are_searched_only_with_their_stage_on():
    def names(changes: dict) -> set[str]:
        config = with_changes(load_config(None), changes)
        assert config is not None
        return {grid.name for grid in grids_for(config)}

    assert "affinity walk" not in names({"affinity.enabled": False})
    assert "affinity walk" in names({"affinity.enabled": True})
    assert "self-training mix" not in names({"self_training.enabled": False})
    assert "self-training mix" in names({"self_training.enabled": True})


def test_a_grid_that_would_retrain_a_head_is_scored_without_it_and_those_after():
    from wsss_core.stages.common import AFFINITY_HEAD, SELF_TRAINING_HEAD
    from wsss_core.stages.tune import heads_left_out, retrained_heads

    config = load_config(None)  # the defaults: both heads on
    assert config.affinity.enabled and config.self_training.enabled

    def left_out(name: str) -> tuple[str, ...]:
        grid = next(grid for grid in SEARCH_SPACE if grid.name == name)
        return heads_left_out(grid, config, "classifier")

    def retrained(name: str) -> set[str]:
        grid = next(grid for grid in SEARCH_SPACE if grid.name == name)
        return retrained_heads(grid, config, "classifier")

    both = (AFFINITY_HEAD, SELF_TRAINING_HEAD)
    assert retrained("cam method") == set(both)
    assert retrained("cam threshold") == set()  # read after the maps: in no lineage
    assert retrained("kernel weights") == {SELF_TRAINING_HEAD}
    assert retrained("self-training mix") == set()
    assert left_out("cam method") == both  # the CAMs teach both heads
    assert left_out("cam threshold") == both  # scored on the CAMs, which no head reaches
    assert left_out("kernel weights") == (SELF_TRAINING_HEAD,)  # the first pass teaches it
    assert left_out("affinity walk") == (SELF_TRAINING_HEAD,)  # the walk is no training key
    assert left_out("self-training mix") == ()  # the weight is read after training


def test_settings_no_run_learnt_heads_for_get_them_trained_once_as_a_run_would(planted, tmp_path):
    from wsss_core.model.affinity_head import head_lineage, load_head
    from wsss_core.stages.common import checked_model_hash
    from wsss_core.stages.tune import held_out_report
    from wsss_core.stages.tune_heads import TuneHeads
    from wsss_core.store.comparison import FrozenHeads

    workspace = Workspace(tmp_path / "ws")
    shutil.copytree(planted["workspace"].root, workspace.root)
    config = planted["config"]  # the affinity head on
    layout = ComparisonLayout(workspace.root / TUNE_DIR)
    heads = TuneHeads(workspace, layout, workspace.model_path, config)
    run_head = heads.frozen(config).affinity
    assert run_head is not None and workspace.models_dir in run_head.parents

    changed = with_changes(config, {"cam.method": "gradcampp"})  # other CAMs teach the head
    trained = heads.frozen(changed).affinity
    assert trained is not None and layout.root in trained.parents
    assert trained.stem == head_lineage(changed, checked_model_hash(workspace))
    assert load_head(trained).images == load_head(run_head).images  # the run's images
    stamp = trained.stat().st_mtime_ns
    assert heads.frozen(changed).affinity == trained and trained.stat().st_mtime_ns == stamp
    assert not (trained.parent.parent / "maps" / "crf").exists()  # no final mask made for it

    split = split_true_masks(true_masks(workspace, read_manifest(workspace)))
    report = held_out_report(
        workspace, layout, workspace.model_path, config, changed, split.held_out, heads=heads
    )
    assert np.isfinite(report.gain.miou)
    digest = FrozenHeads(trained).digests["a"]
    assert list(layout.root.glob(f"*/shards-*/maps/crf/*-a{digest}"))  # scored with it


# --- the quality estimate ---------------------------------------------------------------


def test_the_quality_estimate_is_reported_and_kept_while_its_maps_hold(planted, tmp_path):
    from wsss_core.report.run_report import RunSummary, write_run_report
    from wsss_core.stages.common import checked_model_hash
    from wsss_core.stages.quality import estimate_quality, saved_quality
    from wsss_core.stages.status import workspace_status

    workspace = Workspace(tmp_path / "ws")
    shutil.copytree(planted["workspace"].root, workspace.root)
    config, model = planted["config"], checked_model_hash(workspace)
    quality = estimate_quality(workspace, config, model)
    assert quality.true_masks == IMAGES and quality.without == 0
    assert quality.low <= quality.miou <= quality.high
    assert 1 <= len(quality.worst) <= 3
    report = write_run_report(
        workspace, config, RunSummary("r1", 0.5, False, {}, {}, model_hash=model)
    )
    assert "## Quality of the masks without a true mask" in report.markdown
    assert f"{quality.miou:.3f} [{quality.low:.3f}, {quality.high:.3f}]" in report.markdown
    assert saved_quality(workspace, config, model, read_manifest(workspace)) == quality
    assert any("estimated mIoU" in line for line in workspace_status(workspace, config).lines())
    changed = with_changes(config, {"crf.bilateral_srgb": 7.0})
    assert saved_quality(workspace, changed, model, read_manifest(workspace)) is None  # other masks


def test_without_true_masks_the_quality_is_unknown(planted, tmp_path):
    from wsss_core.stages.common import checked_model_hash
    from wsss_core.stages.quality import estimate_quality

    workspace = Workspace(tmp_path / "ws")
    shutil.copytree(planted["workspace"].root, workspace.root)
    manifest = read_manifest(workspace)
    rows = [replace(r, gt_uri=None) for r in manifest.all_rows]
    write_manifest(workspace, rows, manifest.class_names, manifest.source)
    quality = estimate_quality(workspace, planted["config"], checked_model_hash(workspace))
    assert quality.miou is None and quality.without == IMAGES
    assert quality.lines()[0].startswith("quality of the masks: unknown")


def test_settings_that_lost_on_the_held_out_images_are_objected_to():
    from wsss_core.stages.tune import HeldOutReport, SearchResult, Trial, TuneResult
    from wsss_core.stages.tune_output import held_out_objection
    from wsss_core.tuning.scores import Estimate
    from wsss_core.tuning.split import TruthSplit

    start = load_config(None)
    tuned = with_changes(start, {"crf.bilateral_compat": 5.0})
    search = SearchResult(start, tuned, (), 1.0, True)
    assert search.changes == {}  # no trial touched the key: nothing to apply
    search = replace(
        search, trials=(Trial("kernel weights", {"crf.bilateral_compat": 5.0}, 0.9, 1),)
    )
    assert search.changes == {"crf.bilateral_compat": 5.0}

    def result(gain: float) -> TuneResult:
        figure = Estimate(0.8, 0.7, 0.9, 30, ())
        report = HeldOutReport(figure, figure, Estimate(gain, gain - 0.02, gain + 0.02, 30, ()), ())
        return TuneResult(TruthSplit((), ()), search, report)

    assert "lost -0.014" in held_out_objection(result(-0.014))
    assert held_out_objection(result(0.0)) is None
    assert held_out_objection(result(0.02)) is None


def test_a_tuned_file_recommends_only_settings_that_held_up_on_the_held_out_images(tmp_path):
    from wsss_core.config import read_config_file
    from wsss_core.stages.tune import HeldOutReport, SearchResult, Trial, TuneResult
    from wsss_core.stages.tune_output import found_settings
    from wsss_core.tuning.scores import Estimate
    from wsss_core.tuning.split import TruthSplit

    start = load_config(None)
    tuned = with_changes(start, {"crf.bilateral_compat": 5.0})
    trial = Trial("kernel weights", {"crf.bilateral_compat": 5.0}, 0.9, 1)
    search = SearchResult(start, tuned, (trial,), 1.0, True)

    def written(gain: float) -> Path:
        figure = Estimate(0.8, 0.7, 0.9, 30, ())
        report = HeldOutReport(figure, figure, Estimate(gain, gain - 0.02, gain + 0.02, 30, ()), ())
        result = TuneResult(TruthSplit((), ()), search, report)
        return write_tuned_file(result, tmp_path / f"tuned{gain}.yaml")

    kept = written(0.02)
    assert yaml.safe_load(kept.read_text()) == {"crf": {"bilateral_compat": 5.0}}
    assert load_config(kept).crf.bilateral_compat == 5.0
    declined = written(-0.014)
    assert read_config_file(declined) == {}  # the run keeps the current settings
    assert load_config(declined) == start
    text = declined.read_text()
    assert "Not recommended: the tuned settings lost -0.014" in text
    assert found_settings(kept.read_text()) is None
    # What was found is shown, and uncommented it is a config again.
    assert yaml.safe_load(found_settings(text)) == {"crf": {"bilateral_compat": 5.0}}
