"""`wsss compare`: configs' maps side by side, shared where lineages agree, the workspace untouched.

One small demo workspace (24 images in shards of 10, 10 and 4; a resnet18
from scratch, one epoch) whose own maps, config and evaluation are made with
config A. Config B differs from A in one CRF setting only.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tiny_pipeline import TINY_SECTIONS, TINY_TRAIN

from wsss_cli.main import main
from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import read_manifest
from wsss_core.report.comparison import comparison_table, write_comparison
from wsss_core.stages.compare import Comparison, compare_configs
from wsss_core.stages.evaluate_stage import Evaluation, evaluate_workspace
from wsss_core.stages.registry import MAP_STAGE_RUNNERS
from wsss_core.store.maps import CAM_TABLE_STAGES
from wsss_core.store.workspace import ALL_MAP_STAGES, MAP_STAGES, Workspace
from wsss_core.store.workspace_config import save_workspace_config

TINY = {
    "device": "cpu",
    "shard_size": 10,
    "demo": {"num_images": 24, "image_size": 64, "seed": 5},
    **TINY_SECTIONS,
    "crf": {"background_powers": [0.7, 1.0]},
}
A = PipelineConfig.model_validate(TINY)
B = PipelineConfig.model_validate({**TINY, "crf": {"background_powers": [0.5]}})
CONFIGS = {"a.yaml": A, "b.yaml": B}
# What compare must never change (the lock file is the lock's business).
WORKSPACE_FILES = (
    "maps",
    "masks",
    "models",
    "config.yaml",
    "evaluation.parquet",
    "manifest.parquet",
)


def _run_stages(workspace: Workspace, config: PipelineConfig) -> None:
    shards = len(read_manifest(workspace).shards(config.shard_size))
    for stage in MAP_STAGES:
        for index in range(shards):
            MAP_STAGE_RUNNERS[stage].run(workspace, config, index, False, None)


def _snapshot(root: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name in names:
        path = root / name
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                files[str(file.relative_to(root))] = file.read_bytes()
    return files


def _mtimes(directory: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(directory.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class Compared:
    workspace: Workspace
    before: dict[str, bytes]  # the workspace's files before the compare
    comparison: Comparison
    evaluations: dict[str, Evaluation]  # config name -> `wsss eval` of maps made with it
    config_dir: Path  # a.yaml and b.yaml


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Compared:
    from wsss_core.model.reuse import train_or_reuse
    from wsss_core.stages.ingest_stage import ingest

    root = tmp_path_factory.mktemp("compare")
    workspace = Workspace(root / "ws")
    ingest("demo", None, workspace, demo=A.demo)
    train_or_reuse(workspace, A, log=lambda _: None, show_progress=False)
    # The workspace as a run with A leaves it: maps, masks, config.yaml, evaluation.parquet.
    save_workspace_config(workspace, A, "test run")
    _run_stages(workspace, A)
    evaluations = {"a.yaml": evaluate_workspace(workspace, A)}
    with_b = Workspace(root / "ws-b")  # lineages are content hashes: the copy is as current
    shutil.copytree(workspace.root, with_b.root)
    _run_stages(with_b, B)
    evaluations["b.yaml"] = evaluate_workspace(with_b, B)

    config_dir = root / "configs"
    config_dir.mkdir()
    for name, config in CONFIGS.items():
        (config_dir / name).write_text(yaml.safe_dump(config.model_dump(mode="json")))
    before = _snapshot(workspace.root, WORKSPACE_FILES)
    comparison = compare_configs(workspace, CONFIGS, workspace.root / "compare")
    write_comparison(comparison, comparison.out_dir)
    return Compared(workspace, before, comparison, evaluations, config_dir)


def test_the_stage_table_covers_every_map_stage():
    assert tuple(MAP_STAGE_RUNNERS) == ALL_MAP_STAGES
    # Per-class map tables (scored thresholded, as evaluation scores cam); the rest label maps.
    assert CAM_TABLE_STAGES == ("cam", "affinity")


def test_configs_share_the_shards_of_the_stages_they_agree_on(compared: Compared):
    maps = compared.workspace.root / "compare" / "all" / "shards-10" / "maps"
    for stage, versions in {"cam": 1, "seeds": 1, "grown": 1, "crf": 2}.items():
        directories = sorted((maps / stage).iterdir())
        assert len(directories) == versions, stage
        for directory in directories:
            assert len(list(directory.glob("part-*.parquet"))) == 3
    rows = {(row.config, row.stage): row for row in compared.comparison.rows}
    assert rows["a.yaml", "grown"].maps == rows["b.yaml", "grown"].maps
    assert rows["a.yaml", "crf"].maps != rows["b.yaml", "crf"].maps
    masks = compared.workspace.root / "compare" / "all" / "shards-10" / "masks"
    assert [len(list(d.glob("*.png"))) for d in sorted(masks.iterdir())] == [24, 24]


def test_figures_equal_wsss_eval_of_maps_made_with_each_config(compared: Compared):
    for row in compared.comparison.rows:
        evaluation = compared.evaluations[row.config]
        assert row.miou == evaluation.score(row.stage).miou, (row.config, row.stage)
        assert row.images == evaluation.images == 24
        for share in (row.fg_recall, row.fg_wrong_class, row.bg_to_fg, row.emptied):
            assert 0.0 <= share <= 1.0
        assert row.seconds_per_image > 0
    rows = {(row.config, row.stage): row for row in compared.comparison.rows}
    # Shared shards report the one cost they had when computed.
    assert rows["a.yaml", "cam"].seconds_per_image == rows["b.yaml", "cam"].seconds_per_image


def test_the_workspace_files_are_untouched(compared: Compared):
    assert _snapshot(compared.workspace.root, WORKSPACE_FILES) == compared.before
    assert not (compared.workspace.root / "compare" / "models").exists()  # its model fits A


def test_a_second_compare_recomputes_nothing_and_prints_the_same_table(
    compared: Compared, capsys, monkeypatch
):
    work = compared.workspace.root / "compare" / "all"
    before = _mtimes(work)
    monkeypatch.chdir(compared.config_dir)  # config names as given: a.yaml, b.yaml
    code = main(["compare", "--workspace", str(compared.workspace.root), "a.yaml", "b.yaml"])
    assert code == 0
    out = capsys.readouterr().out
    assert comparison_table(compared.comparison) in out
    assert "shards computed " + ", ".join(f"{stage} 0/3" for stage in MAP_STAGES) in out
    assert _mtimes(work) == before
    assert _snapshot(compared.workspace.root, WORKSPACE_FILES) == compared.before


def test_compare_json_has_the_documented_keys(compared: Compared):
    payload = json.loads((compared.comparison.out_dir / "compare.json").read_text())
    keys = {
        "config",
        "stage",
        "miou",
        "fg_recall",
        "fg_wrong_class",
        "bg_to_fg",
        "emptied",
        "seconds_per_image",
    }
    results = payload["results"]
    assert [(r["config"], r["stage"]) for r in results] == [
        (name, stage) for name in CONFIGS for stage in MAP_STAGES
    ]
    assert all(keys <= set(result) for result in results)
    for name in ("compare.md", "compare.png"):
        assert (compared.comparison.out_dir / name).stat().st_size > 0


def test_limit_and_another_train_section(compared: Compared, capsys, monkeypatch, tmp_path):
    """--limit 4 compares the first 4 images; config C trains its own classifier under compare/."""
    other = {**TINY, "train": {**TINY_TRAIN, "seed": 1}}
    (compared.config_dir / "c.yaml").write_text(yaml.safe_dump(other))
    monkeypatch.chdir(compared.config_dir)
    out = tmp_path / "out"
    argv = ["compare", "--workspace", str(compared.workspace.root), "a.yaml", "c.yaml"]
    assert main([*argv, "--limit", "4", "--out", str(out)]) == 0
    capsys.readouterr()
    results = json.loads((out / "compare.json").read_text())["results"]
    assert {r["images"] for r in results} == {4}
    (images_dir,) = [p for p in out.iterdir() if (p / "manifest.parquet").exists()]
    assert len(read_manifest(Workspace(images_dir))) == 4
    assert len(list(out.glob("models/*/classifier.pt"))) == 1  # for c.yaml; a.yaml: the workspace's
    miou = {(r["config"], r["stage"]): r["miou"] for r in results}
    assert miou["a.yaml", "cam"] != miou["c.yaml", "cam"]  # another model, other maps
    assert _snapshot(compared.workspace.root, WORKSPACE_FILES) == compared.before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["missing.yaml"], "missing.yaml: no such config file"),
        (["bad.yaml"], "bad.yaml: seeds: "),
        (["a.yaml", "--limit", "0"], "--limit"),
        (["a.yaml", "--limit", "3", "--images", "ids.txt"], "exclude each other"),
        (["a.yaml", "--images", "ids.txt"], "'no-such-image'"),
        (["a.yaml", "a.yaml"], "given twice"),
        (["a.yaml", "--out", "{workspace}/maps"], "--out"),
    ],
)
def test_usage_errors_exit_2(compared: Compared, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(compared.config_dir)
    Path("bad.yaml").write_text("seeds:\n  fg_threshold: 0.1\n  bg_threshold: 0.5\n")
    Path("ids.txt").write_text("demo_00000\nno-such-image\n")
    workspace = str(compared.workspace.root)
    extra = [value.format(workspace=workspace) for value in extra]
    assert main(["compare", "--workspace", workspace, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsss compare: usage error:")
    assert message in err


def test_each_compared_image_set_has_its_own_affinity_head(tmp_path: Path):
    from wsss_core.config import PipelineConfig
    from wsss_core.store.comparison import ComparisonLayout

    layout, config = ComparisonLayout(tmp_path / "compare"), PipelineConfig()
    some = layout.view("abc123", config, tmp_path / "classifier.pt")
    every = layout.view("all", config, tmp_path / "classifier.pt")
    assert some.affinity_head_path("h") != every.affinity_head_path("h")
    assert some.affinity_head_path("h").is_relative_to(some.root)
