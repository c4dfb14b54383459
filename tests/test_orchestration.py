"""Orchestration on a real Prefect server: the label and evaluate flows, incremental runs,
a failing shard, and the Dask runner giving the same maps as threads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from tiny_pipeline import TINY_SECTIONS, label_run

from wsss_core.config import load_config
from wsss_core.data.demo import generate_demo_dataset
from wsss_core.data.manifest import read_manifest
from wsss_core.data.sources import IngestOptions
from wsss_core.model.reuse import train_or_reuse
from wsss_core.stages.ingest_stage import ingest
from wsss_core.store.maps import read_cam_shard, read_label_shard, shard_paths
from wsss_core.store.workspace import MAP_STAGES, Workspace

IMAGES = 30
HELD_BACK = 3  # images added to the source after the first run
SHARD_SIZE = 10  # 27 images: shards 0 and 1 full, shard 2 gains the added ones

CONFIG = {
    "shard_size": SHARD_SIZE,
    "device": "cpu",
    **TINY_SECTIONS,
}


def _write_config(path: Path, **overrides) -> str:
    config = {**CONFIG, **overrides}
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _hold_back(source: Path, ids: list[str], holding: Path) -> None:
    """Move ``ids`` out of a folder source (image, mask and CSV row)."""
    holding.mkdir()
    for sub in ("images", "masks"):
        (holding / sub).mkdir()
        for image_id in ids:
            shutil.move(source / sub / f"{image_id}.png", holding / sub / f"{image_id}.png")
    lines = (source / "labels.csv").read_text().splitlines()
    kept = [line for line in lines if line.split(",")[0] not in ids]
    (holding / "labels.csv").write_text("\n".join(lines) + "\n")
    (source / "labels.csv").write_text("\n".join(kept) + "\n")


def _restore(source: Path, holding: Path) -> None:
    for sub in ("images", "masks"):
        for path in (holding / sub).iterdir():
            shutil.move(path, source / sub / path.name)
    shutil.copy(holding / "labels.csv", source / "labels.csv")


def _stage_arrays(workspace: Workspace) -> dict[tuple[str, str], list[np.ndarray]]:
    """Every map of every stage, by (stage, image id), for exact comparisons."""
    arrays: dict[tuple[str, str], list[np.ndarray]] = {}
    for stage in MAP_STAGES:
        for path in sorted(workspace.maps_dir(stage).glob("part-*.parquet")):
            if stage == "cam":
                for record in read_cam_shard(path):
                    arrays[stage, record.image_id] = [record.cams]
            else:
                for record in read_label_shard(path):
                    arrays[stage, record.image_id] = [record.labels]
                    if record.confidence is not None:
                        arrays[stage, record.image_id].append(record.confidence)
    return arrays


def _assert_maps_equal(
    expected: dict[tuple[str, str], list[np.ndarray]], got: dict[tuple[str, str], list[np.ndarray]]
) -> None:
    """Every map of ``expected`` is in ``got``, equal array for array."""
    for key, arrays in expected.items():
        for want, have in zip(arrays, got[key], strict=True):
            np.testing.assert_array_equal(have, want, err_msg=str(key))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness):
    """A trained folder-source workspace with three images held back, labelled once."""
    root = tmp_path_factory.mktemp("orchestration")
    source = generate_demo_dataset(root / "source", IMAGES, image_size=64, seed=5).root
    held = [f"demo_{index:05d}" for index in range(IMAGES - HELD_BACK, IMAGES)]
    _hold_back(source, held, root / "held-back")
    workspace = Workspace(root / "workspace")
    ingest("folder", source, workspace, IngestOptions())
    config_file = _write_config(root / "config.yaml")
    train_or_reuse(workspace, load_config(config_file), log=lambda _: None, show_progress=False)
    state, first = label_run(workspace.root, config_file)
    assert state.is_completed(), state.message
    snapshot = root / "snapshot"
    shutil.copytree(workspace.root, snapshot)  # the threads runner's maps, for comparisons
    return {
        "root": root,
        "source": source,
        "workspace": workspace,
        "config": config_file,
        "first": first,
        "snapshot": Workspace(snapshot),
    }


def test_label_flow_computes_every_shard_then_nothing(trained):
    first = trained["first"]
    assert first.shards == 3
    assert first.computed_shards == {stage: 3 for stage in MAP_STAGES}
    assert first.computed_images == {stage: IMAGES - HELD_BACK for stage in MAP_STAGES}
    state, again = label_run(trained["workspace"].root, trained["config"])
    assert state.is_completed()
    assert again.computed_shards == {stage: 0 for stage in MAP_STAGES}


def test_commands_without_config_use_the_config_the_last_run_saved(trained, capsys):
    from wsss_cli.main import main

    workspace = trained["workspace"]
    saved = load_config(workspace.config_path)
    assert saved == load_config(trained["config"])  # a valid config file, the run's own
    assert main(["status", "--workspace", str(workspace.root)]) == 0
    out = capsys.readouterr().out
    assert "up to date with the train config" in out
    crf_line = next(line for line in out.splitlines() if line.startswith("crf"))
    assert crf_line.split() == ["crf", str(IMAGES - HELD_BACK), "0", "0", "0"]  # all done


def test_evaluate_flow_scores_up_to_date_shards_only(trained, tmp_path):
    from flows.evaluate import evaluate

    evaluation = evaluate(workspace=str(trained["workspace"].root), config_file=trained["config"])
    assert evaluation.images == IMAGES - HELD_BACK and evaluation.pending_shards == 0
    # One shard without its crf maps: the others are scored, it is counted as pending.
    partial = Workspace(tmp_path / "partial")
    shutil.copytree(trained["snapshot"].root, partial.root)
    partial.shard_path("crf", 1).unlink()
    evaluation = evaluate(workspace=str(partial.root), config_file=trained["config"])
    assert evaluation.pending_shards == 1
    assert evaluation.images == IMAGES - HELD_BACK - SHARD_SIZE
    # A CRF change makes every shard's crf maps stale: nothing may be scored.
    changed = _write_config(tmp_path / "crf.yaml", crf={"iterations": 3})
    with pytest.raises(ValueError, match="up-to-date maps"):
        evaluate(workspace=str(trained["workspace"].root), config_file=changed)


def test_dask_runner_gives_the_same_maps_as_threads(trained, tmp_path):
    from flows.runners import RunnerOptions, prefect_api_for_workers

    workspace = Workspace(tmp_path / "dask-workspace")
    shutil.copytree(trained["snapshot"].root, workspace.root)
    shutil.rmtree(workspace.root / "maps")
    with prefect_api_for_workers():
        state, result = label_run(
            workspace.root, trained["config"], RunnerOptions(kind="dask", workers=2)
        )
    assert state.is_completed(), state.message
    assert result.computed_shards == {stage: 3 for stage in MAP_STAGES}
    expected, got = _stage_arrays(trained["snapshot"]), _stage_arrays(workspace)
    assert got.keys() == expected.keys()
    _assert_maps_equal(expected, got)


def _out_of_memory_on(monkeypatch, module: str, name: str, victims: set[str]) -> None:
    """Make ``module.name`` raise MemoryError when it meets one of ``victims``' pixels.

    An error of the machine, not of the image: it must fail the shard. The
    victims are told by their pixels, which is all the patched function sees.
    """
    import importlib

    from wsss_core.data.images import load_rgb

    target = importlib.import_module(module)
    real = getattr(target, name)
    poisoned = [load_rgb(uri) for uri in victims]

    def fake(image, *args, **kwargs):
        pixels = image if isinstance(image, np.ndarray) else load_rgb(image.uri)
        if any(p.shape == pixels.shape and np.array_equal(p, pixels) for p in poisoned):
            raise MemoryError("out of memory")
        return real(image, *args, **kwargs)

    monkeypatch.setattr(target, name, fake)


def test_a_failing_shard_is_reported_and_the_others_keep_their_results(
    trained, tmp_path, monkeypatch
):
    workspace = Workspace(tmp_path / "failing")
    shutil.copytree(trained["snapshot"].root, workspace.root)
    victim = read_manifest(workspace).shards(SHARD_SIZE)[1][0]
    # Only the CRF reads the pixels again: a changed CRF setting makes it recompute.
    config_file = _write_config(tmp_path / "crf.yaml", crf={"iterations": 4})
    with monkeypatch.context() as patch:
        _out_of_memory_on(
            patch, "wsss_core.stages.first_pass", "refine_best_background", {victim.uri}
        )
        state, result = label_run(workspace.root, config_file)
    assert state.is_failed()
    assert "1 shard(s) failed, first crf shard 1" in state.message
    assert [(f.stage, f.shard_index) for f in result.failures] == [("crf", 1)]
    assert victim.uri in result.failures[0].error  # the error names the file
    assert result.computed_shards["crf"] == 2  # shards 0 and 2 finished and were kept
    state, retry = label_run(workspace.root, config_file)
    assert state.is_completed()
    assert retry.computed_shards == {"cam": 0, "seeds": 0, "grown": 0, "crf": 1}


def test_a_run_whose_every_shard_failed_still_writes_its_report(trained, tmp_path, monkeypatch):
    from flows.pseudo_label import pseudo_label

    workspace = Workspace(tmp_path / "failing-run")
    shutil.copytree(trained["snapshot"].root, workspace.root)
    shutil.rmtree(workspace.root / "maps")  # cam reads every image again
    victims = {shard[0].uri for shard in read_manifest(workspace).shards(SHARD_SIZE)}
    with monkeypatch.context() as patch:
        _out_of_memory_on(patch, "wsss_core.stages.cam_stage", "read_image", victims)
        state = pseudo_label(
            workspace=str(workspace.root),
            config_file=trained["config"],
            publish=False,
            return_state=True,
        )
    assert state.is_failed()
    assert "3 shard(s) failed, first cam shard 0" in state.message
    result = state.result(raise_on_failure=False)
    assert result.evaluation is None  # not scored while shards are missing
    # No map to draw and nothing scored: the report is the run's only record.
    report = Path(result.report_path).read_text()
    assert "## Failed shards (3)" in report and "| cam | 2 |" in report
    assert "Stage overlays" not in report


def test_images_added_to_the_source_cost_only_their_own_maps(trained):
    from flows.pseudo_label import pseudo_label

    workspace, root = trained["workspace"], trained["root"]
    before = _stage_arrays(workspace)
    untouched = {
        stage: [p.stat().st_mtime_ns for p in sorted(workspace.maps_dir(stage).glob("*"))[:2]]
        for stage in MAP_STAGES
    }
    _restore(trained["source"], root / "held-back")
    result = pseudo_label(
        workspace=str(workspace.root), config_file=trained["config"], refresh=True, publish=False
    )
    assert len(read_manifest(workspace)) == IMAGES
    assert not result.trained  # the current classifier is kept: no retraining by default
    assert result.model_behind_data  # ... and the run says the model is behind its data
    assert result.computed_shards == {stage: 1 for stage in MAP_STAGES}
    assert result.computed_images == {stage: HELD_BACK for stage in MAP_STAGES}
    for stage in MAP_STAGES:  # shards 0 and 1 were not rewritten
        paths = sorted(workspace.maps_dir(stage).glob("*"))[:2]
        assert [p.stat().st_mtime_ns for p in paths] == untouched[stage], stage
    after = _stage_arrays(workspace)
    _assert_maps_equal(before, after)  # kept rows are the very same maps
    # The merged shard equals a from-scratch computation of it, in manifest order.
    shard_two = workspace.shard_path("crf", 2)
    merged_ids = pq.read_table(shard_two, columns=["image_id"])["image_id"].to_pylist()
    assert merged_ids == [r.image_id for r in read_manifest(workspace).shards(SHARD_SIZE)[2]]
    for stage in MAP_STAGES:
        workspace.shard_path(stage, 2).unlink()
    state, recomputed = label_run(workspace.root, trained["config"])
    assert state.is_completed()
    assert recomputed.computed_images == {stage: SHARD_SIZE for stage in MAP_STAGES}
    from_scratch = _stage_arrays(workspace)
    assert from_scratch.keys() == after.keys()
    _assert_maps_equal(after, from_scratch)


def test_the_cli_names_a_failed_shard_and_exits_1(trained, tmp_path, capsys, monkeypatch):
    from wsss_cli.main import main

    workspace = Workspace(tmp_path / "cli-failing")
    shutil.copytree(trained["snapshot"].root, workspace.root)
    victim = read_manifest(workspace).shards(SHARD_SIZE)[2][0]
    config_file = _write_config(tmp_path / "crf.yaml", crf={"iterations": 5})
    with monkeypatch.context() as patch:
        _out_of_memory_on(
            patch, "wsss_core.stages.first_pass", "refine_best_background", {victim.uri}
        )
        code = main(["label", "--workspace", str(workspace.root), "--config", config_file])
    captured = capsys.readouterr()
    assert code == 1
    assert "shards recomputed: cam 0 (0 images), seeds 0 (0 images)" in captured.out
    assert "crf 2 (20 images)" in captured.out
    err = captured.err.strip().splitlines()
    assert err[-2].startswith("failed: crf shard 2:") and victim.uri in err[-2]
    assert err[-1].startswith("error: 1 shard(s) failed, first crf shard 2")


def test_runner_options_that_do_not_fit_are_a_usage_error(trained, capsys):
    from wsss_cli.main import main

    workspace = str(trained["workspace"].root)
    code = main(["label", "--workspace", workspace, "--runner", "threads", "--dask-address", "x"])
    assert code == 2
    assert "usage error: a Dask scheduler address needs kind 'dask'" in capsys.readouterr().err


def _shard_or_die(shard_index: int):
    """A stand-in shard task whose shard 1 kills its worker process (like a segfault)."""
    import os

    from wsss_core.stages.common import ShardOutcome

    if shard_index == 1:
        os._exit(1)
    return ShardOutcome("crf", shard_index, 1, True, 0.0, 1)


def test_a_dask_worker_dying_fails_its_shard_only(prefect_harness):
    import dask
    from prefect import flow, task

    from flows.label import collect_shards
    from flows.runners import RunnerOptions, make_task_runner, prefect_api_for_workers

    shard_task = task(_shard_or_die, name="shard-or-die", retries=0)

    @flow(task_runner=make_task_runner(RunnerOptions(kind="dask", workers=2)))
    def stage_with_a_crash():
        return collect_shards("crf", [0, 1, 2], shard_task.map([0, 1, 2]))

    # A killed worker's task is not handed to another worker (Dask retries it 3 times).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), prefect_api_for_workers():
        done, failures = stage_with_a_crash()
    assert [outcome.shard_index for outcome in done] == [0, 2]
    assert [(f.stage, f.shard_index) for f in failures] == [("crf", 1)]
    assert failures[0].error.startswith("KilledWorker")


AFFINITY = {
    "enabled": True,
    "input_side": 64,
    "train_images": 12,
    "epochs": 1,
    "train_radius": 5,
}


def _head_files(workspace: Workspace) -> list[Path]:
    return sorted((workspace.models_dir / "affinity").glob("*.pt"))


def _walked(workspace: Workspace) -> dict[str, np.ndarray]:
    return {
        record.image_id: record.cams
        for path in shard_paths(workspace.maps_dir("affinity"))
        for record in read_cam_shard(path)
    }


def test_the_affinity_stage_trains_its_head_once_and_caches_like_the_others(trained, tmp_path):
    from flows.runners import RunnerOptions, prefect_api_for_workers

    workspace = Workspace(tmp_path / "affinity")
    shutil.copytree(trained["snapshot"].root, workspace.root)
    config_file = _write_config(tmp_path / "affinity.yaml", affinity=AFFINITY)
    state, first = label_run(workspace.root, config_file)
    assert state.is_completed(), state.message
    # Switching it on walks every shard and redoes the crf (which restores from the walk);
    # cam, seeds and grown do not depend on it.
    assert first.computed_shards == {"cam": 0, "affinity": 3, "seeds": 0, "grown": 0, "crf": 3}
    assert len(_head_files(workspace)) == 1
    walked = _walked(workspace)
    assert len(walked) == IMAGES - HELD_BACK
    state, again = label_run(workspace.root, config_file)
    assert again.computed_shards == dict.fromkeys(first.computed_shards, 0)
    # A walk setting: walked again with the same head.
    walk_file = _write_config(tmp_path / "beta.yaml", affinity={**AFFINITY, "beta": 8.0})
    state, rewalked = label_run(workspace.root, walk_file)
    assert rewalked.computed_shards == {"cam": 0, "affinity": 3, "seeds": 0, "grown": 0, "crf": 3}
    assert len(_head_files(workspace)) == 1
    # The same maps from Dask workers, the head trained again there from scratch.
    on_dask = Workspace(tmp_path / "affinity-dask")
    shutil.copytree(trained["snapshot"].root, on_dask.root)
    with prefect_api_for_workers():
        state, _ = label_run(on_dask.root, config_file, RunnerOptions(kind="dask", workers=2))
    assert state.is_completed(), state.message
    got = _walked(on_dask)
    assert got.keys() == walked.keys()
    for image_id, maps in walked.items():
        np.testing.assert_array_equal(got[image_id], maps, err_msg=image_id)


SELF_TRAINING = {"enabled": True, "input_side": 64, "train_images": 12, "epochs": 1, "width": 16}


def _final_masks(workspace: Workspace) -> dict[str, np.ndarray]:
    return {
        record.image_id: record.labels
        for path in shard_paths(workspace.maps_dir("crf"))
        for record in read_label_shard(path)
    }


def _final_rows(workspace: Workspace) -> dict:
    return {
        record.image_id: record
        for path in shard_paths(workspace.maps_dir("crf"))
        for record in read_label_shard(path)
    }


def test_self_training_trains_its_head_once_and_gives_the_same_masks_on_dask(
    trained, tmp_path, monkeypatch
):
    from flows.runners import RunnerOptions, prefect_api_for_workers
    from wsss_core.stages import crf_stage
    from wsss_core.stages.first_pass import first_passes_path

    workspace = Workspace(tmp_path / "self-training")
    shutil.copytree(trained["snapshot"].root, workspace.root)
    config_file = _write_config(tmp_path / "self.yaml", self_training=SELF_TRAINING)
    computed: list[str] = []  # the crf stage's own first passes

    def counted(image, cams, *args):
        computed.append(cams.image_id)
        return real_first_pass(image, cams, *args)

    real_first_pass = crf_stage.first_pass_mask
    monkeypatch.setattr(crf_stage, "first_pass_mask", counted)
    state, first = label_run(workspace.root, config_file)
    assert state.is_completed(), state.message
    assert first.computed_shards == {"cam": 0, "seeds": 0, "grown": 0, "crf": 3}
    heads = list((workspace.models_dir / "segmentation").glob("*.pt"))
    assert len(heads) == 1
    masks = _final_masks(workspace)
    assert len(masks) == IMAGES - HELD_BACK
    # The head's 12 training images take the first passes it learnt from; the rest compute theirs.
    kept = pq.read_table(first_passes_path(heads[0]), columns=["image_id"])["image_id"]
    assert len(kept) == SELF_TRAINING["train_images"]
    assert sorted(computed) == sorted(set(masks) - set(kept.to_pylist()))
    # ... and they are what the crf stage computes: the same rows without them.
    rows = _final_rows(workspace)
    first_passes_path(heads[0]).unlink()
    shutil.rmtree(workspace.maps_dir("crf"))
    computed.clear()
    state, _ = label_run(workspace.root, config_file)
    assert state.is_completed(), state.message
    assert sorted(computed) == sorted(masks)
    for image_id, row in _final_rows(workspace).items():
        kept_row = rows[image_id]
        np.testing.assert_array_equal(row.labels, kept_row.labels, err_msg=image_id)
        np.testing.assert_array_equal(row.confidence, kept_row.confidence, err_msg=image_id)
        assert (row.recovered, row.background_power) == (
            kept_row.recovered,
            kept_row.background_power,
        ), image_id
    # The mix weight is the second pass's: the crf again, with the same head.
    mix_file = _write_config(
        tmp_path / "mix.yaml", self_training={**SELF_TRAINING, "head_weight": 0.3}
    )
    state, remixed = label_run(workspace.root, mix_file)
    assert state.is_completed(), state.message
    assert remixed.computed_shards == {"cam": 0, "seeds": 0, "grown": 0, "crf": 3}
    assert len(list((workspace.models_dir / "segmentation").glob("*.pt"))) == 1
    on_dask = Workspace(tmp_path / "self-training-dask")
    shutil.copytree(trained["snapshot"].root, on_dask.root)
    with prefect_api_for_workers():
        state, _ = label_run(on_dask.root, config_file, RunnerOptions(kind="dask", workers=2))
    assert state.is_completed(), state.message
    got = _final_masks(on_dask)
    assert got.keys() == masks.keys()
    for image_id, labels in masks.items():
        np.testing.assert_array_equal(got[image_id], labels, err_msg=image_id)


def test_status_lists_the_affinity_stage_and_its_head(trained, tmp_path, capsys):
    from wsss_cli.main import main

    workspace = Workspace(tmp_path / "affinity-status")
    shutil.copytree(trained["snapshot"].root, workspace.root)
    config_file = _write_config(tmp_path / "affinity.yaml", affinity=AFFINITY)
    assert main(["status", "--workspace", str(workspace.root), "--config", config_file]) == 0
    out = capsys.readouterr().out
    assert "affinity head: none for this classifier and config yet" in out
    line = next(line for line in out.splitlines() if line.startswith("affinity  "))
    assert line.split() == ["affinity", "0", str(IMAGES - HELD_BACK), "0", str(IMAGES - HELD_BACK)]


def test_a_partial_config_keeps_the_saved_rest_and_each_file_is_read_once(
    trained, tmp_path, capsys, monkeypatch
):
    """`wsss run --config f`: f layered over the saved config, parsed once, saved once, and
    the label sub-flow gets the config and the model hash instead of taking them again."""
    import flows.label
    from wsss_cli.main import main
    from wsss_core import config as config_module
    from wsss_core import config_layers

    workspace = Workspace(tmp_path / "layered")
    shutil.copytree(trained["snapshot"].root, workspace.root)
    partial = tmp_path / "crf-only.yaml"
    partial.write_text("crf:\n  iterations: 2\n")
    reads: list[Path] = []
    read = config_module.read_config_file

    def counting_read(path):
        reads.append(Path(path))
        return read(path)

    monkeypatch.setattr(config_module, "read_config_file", counting_read)
    monkeypatch.setattr(config_layers, "read_config_file", counting_read)
    hashed: list[Workspace] = []
    checked_model_hash = flows.label.checked_model_hash

    def counting_hash(ws):
        hashed.append(ws)
        return checked_model_hash(ws)

    monkeypatch.setattr(flows.label, "checked_model_hash", counting_hash)
    argv = ["run", "--workspace", str(workspace.root), "--config", str(partial), "--no-publish"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert sorted(reads) == sorted([workspace.config_path, partial])  # each parsed once
    assert hashed == []
    # The saved train, cam and shard size are kept: the classifier is reused, crf alone redone.
    assert "(reused)" in out
    computed = "cam 0 (0 images), seeds 0 (0 images), grown 0 (0 images), crf 3 (27 images)"
    assert f"shards recomputed: {computed}" in out
    expected = load_config(trained["config"])
    expected = expected.model_copy(
        update={"crf": expected.crf.model_copy(update={"iterations": 2})}
    )
    assert load_config(workspace.config_path) == expected
    # Saved by the entry flow alone (the label sub-flow's save would have said "label run").
    header = workspace.config_path.read_text().splitlines()[0]
    assert header.startswith("# The configuration of this workspace's last pseudo-label run")
