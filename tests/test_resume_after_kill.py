"""A run killed (SIGKILL) in the middle of a stage resumes from what it finished.

The workspace is ingested and the classifier trained up front; then ``wsss run``
is started as a child process and killed, with its whole process group, once the
CRF stage (the last map stage) has written some but not all of its shards. The
kill must leave only complete, lineage-stamped shards under their final names,
release the workspace lock, and a re-run must compute exactly the missing shards.

A write killed between its temporary file and the rename is also reproduced on
purpose (a kill landing there in the real run is a matter of luck): the leftover
temporary file must never be taken for a stage output.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from tiny_pipeline import TINY_SECTIONS

from wsss_core.config import PipelineConfig
from wsss_core.data.images import load_label_map
from wsss_core.data.manifest import read_manifest
from wsss_core.model.checkpoint import file_hash
from wsss_core.stages.common import expected_lineage
from wsss_core.store.lock import WorkspaceLocked, workspace_lock
from wsss_core.store.maps import read_lineage, shard_paths
from wsss_core.store.parquet_io import read_metadata
from wsss_core.store.workspace import MAP_STAGES, Workspace

REPO_ROOT = Path(__file__).resolve().parents[1]

NUM_IMAGES = 40
SHARD_SIZE = 4
NUM_SHARDS = NUM_IMAGES // SHARD_SIZE  # 10 shards per stage

CONFIG = {
    "shard_size": SHARD_SIZE,
    "demo": {"num_images": NUM_IMAGES, "image_size": 64, "seed": 5},
    **TINY_SECTIONS,
    # Many mean-field iterations: about half a second per shard, so the CRF stage
    # is the long one and there is a wide window between its first and last shard.
    "crf": {"iterations": 200},
}

# Generous: only reached when something is wrong (the run normally gets there in ~15 s).
KILL_DEADLINE_S = 180.0
POLL_INTERVAL_S = 0.02

# What atomic_write names its temporary file: tempfile.mkstemp(prefix=".<name>.", suffix=".tmp").
TEMP_NAME = re.compile(r"^\.part-\d{5}\.parquet\..+\.tmp$")

# Writes the first half of a real shard through atomic_write, then SIGKILLs itself
# before the rename: exactly what a kill in the middle of a shard write leaves.
KILLED_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from wsss_core.store.atomic import atomic_write

    target, source = Path(sys.argv[1]), Path(sys.argv[2])
    data = source.read_bytes()

    def write(tmp_name):
        with open(tmp_name, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    atomic_write(target, write)
    """
)


@dataclass
class KilledRun:
    """The workspace as the kill left it, inspected before anything else touches it."""

    workspace: Workspace
    config_path: Path
    crf_done: list[int]  # CRF shards on disk right after the kill
    upstream_done: dict[str, int]  # cam/seeds/grown shards on disk right after the kill
    lock_error: str | None  # None: the lock could be taken right after the kill
    problems: list[str] = field(default_factory=list)  # broken outputs under final names
    strays: list[str] = field(default_factory=list)  # other files in maps/<stage>/
    listed_by_readers: dict[str, list[str]] = field(default_factory=dict)
    injected_temp: Path | None = None
    injected_target: Path | None = None
    injected_temp_readable: bool = True


def _crf_shards(workspace: Workspace) -> list[int]:
    paths = workspace.maps_dir("crf").glob("part-*.parquet")
    return sorted(int(p.stem.split("-")[1]) for p in paths)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _inspect_outputs(workspace: Workspace, config: PipelineConfig) -> list[str]:
    """Every file under a final output name must be complete and carry its lineage."""
    problems: list[str] = []
    manifest = read_manifest(workspace)
    shards = manifest.shards(config.shard_size)
    model = file_hash(workspace.model_path)  # what the stages stamp as model_hash
    for stage in MAP_STAGES:
        for path in sorted(workspace.maps_dir(stage).glob("part-*.parquet")):
            index = int(path.stem.split("-")[1])
            records = shards[index]
            try:
                table = pq.read_table(path)  # every row group, every column
                metadata = read_metadata(path)
            except (pa.ArrowInvalid, OSError, ValueError) as error:
                problems.append(f"{path}: unreadable ({error})")
                continue
            if table.num_rows != len(records):
                problems.append(f"{path}: {table.num_rows} rows, shard has {len(records)}")
            if table.column("image_id").to_pylist() != [r.image_id for r in records]:
                problems.append(f"{path}: image ids differ from the shard's")
            if metadata.get("stage") != stage:
                problems.append(f"{path}: metadata stage {metadata.get('stage')!r}")
            wanted = expected_lineage(config, stage, model, records)
            if read_lineage(path) != wanted:
                problems.append(f"{path}: lineage {read_lineage(path)} != {wanted}")
    records = manifest.by_id()
    for path in sorted(workspace.masks_dir.glob("*.png")):
        record = records[path.stem]
        try:
            mask = load_label_map(path)
        except OSError as error:
            problems.append(f"{path}: unreadable mask ({error})")
            continue
        if mask.shape != (record.height, record.width):
            problems.append(f"{path}: mask shape {mask.shape}")
    return problems


def _start_run(workspace: Workspace, config_path: Path, log_dir: Path) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,  # PREFECT_HOME etc. from conftest
        "PREFECT_API_URL": PREFECT_API_URL.value(),  # the harness's server: no second start
        # One shard at a time, so CRF shards land one by one and the kill falls between.
        "PREFECT_TASK_RUNNER_THREAD_POOL_MAX_WORKERS": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "wsss_cli.main", "run"]
    command += ["--workspace", str(workspace.root), "--config", str(config_path), "--no-publish"]
    with open(log_dir / "run.out", "wb") as out, open(log_dir / "run.err", "wb") as err:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=err, start_new_session=True
        )


def _kill_during_crf(process: subprocess.Popen, workspace: Workspace, log_dir: Path) -> None:
    """Wait until the CRF stage has written a shard, then SIGKILL the run's process group."""
    deadline = time.monotonic() + KILL_DEADLINE_S
    try:
        while not _crf_shards(workspace):
            if process.poll() is not None:
                pytest.fail(
                    f"`wsss run` exited ({process.returncode}) before the CRF stage wrote a "
                    f"shard:\n{_tail(log_dir / 'run.err')}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no CRF shard within {KILL_DEADLINE_S:.0f} s of starting `wsss run`:\n"
                    f"{_tail(log_dir / 'run.err')}"
                )
            time.sleep(POLL_INTERVAL_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: pgid == pid
        process.wait(timeout=60)


def _inject_killed_write(run: KilledRun, log_dir: Path) -> None:
    """A CRF shard write SIGKILLed before its rename, for a shard the run had not written."""
    missing = sorted(set(range(NUM_SHARDS)) - set(run.crf_done))
    target = run.workspace.shard_path("crf", missing[0])
    source = run.workspace.shard_path("crf", run.crf_done[0])
    before = set(target.parent.iterdir())
    child = subprocess.run(
        [sys.executable, "-c", KILLED_WRITE, str(target), str(source)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, f"killed write exited {child.returncode}: {child}"
    (temp,) = set(target.parent.iterdir()) - before
    run.injected_target, run.injected_temp = target, temp
    try:
        pq.read_table(temp)
    except (pa.ArrowInvalid, OSError):
        run.injected_temp_readable = False


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, prefect_harness) -> KilledRun:
    from wsss_core.model.reuse import train_or_reuse
    from wsss_core.stages.ingest_stage import ingest

    root = tmp_path_factory.mktemp("resume-after-kill")
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    config = PipelineConfig.from_yaml(config_path)
    workspace = Workspace(root / "workspace")
    ingest("demo", workspace.root / "demo-source", workspace, demo=config.demo)
    assert len(read_manifest(workspace)) == NUM_IMAGES
    assert len(read_manifest(workspace).shards(SHARD_SIZE)) == NUM_SHARDS
    train_or_reuse(workspace, config, show_progress=False, log=lambda message: None)

    process = _start_run(workspace, config_path, root)
    _kill_during_crf(process, workspace, root)
    assert process.returncode == -signal.SIGKILL, (
        f"`wsss run` ended by itself ({process.returncode}) instead of being killed:\n"
        f"{_tail(root / 'run.err')}"
    )

    lock_error = None
    try:
        with workspace_lock(workspace, "resume-after-kill test"):
            pass
    except WorkspaceLocked as error:
        lock_error = str(error)

    run = KilledRun(
        workspace,
        config_path,
        crf_done=_crf_shards(workspace),
        upstream_done={
            stage: len(list(workspace.maps_dir(stage).glob("part-*.parquet")))
            for stage in MAP_STAGES
            if stage != "crf"
        },
        lock_error=lock_error,
    )
    assert 0 < len(run.crf_done) < NUM_SHARDS, (
        f"the kill must land inside the CRF stage, but {len(run.crf_done)} of {NUM_SHARDS} "
        "CRF shards were on disk (one shard at a time? slow enough CRF?)"
    )
    run.problems = _inspect_outputs(workspace, config)
    _inject_killed_write(run, root)
    for stage in MAP_STAGES:
        directory = workspace.maps_dir(stage)
        finals = set(directory.glob("part-*.parquet"))
        run.strays += [p.name for p in sorted(directory.iterdir()) if p not in finals]
        run.listed_by_readers[stage] = [p.name for p in shard_paths(directory)]
    return run


@pytest.fixture(scope="module")
def resumed(killed_run):
    from flows.pseudo_label import pseudo_label

    ws = str(killed_run.workspace.root)
    config_file = str(killed_run.config_path)
    second = pseudo_label(workspace=ws, config_file=config_file, demo=False, publish=False)
    third = pseudo_label(workspace=ws, config_file=config_file, demo=False, publish=False)
    return second, third


def test_the_kill_landed_in_the_crf_stage_after_every_upstream_shard(killed_run):
    assert killed_run.upstream_done == {"cam": NUM_SHARDS, "seeds": NUM_SHARDS, "grown": NUM_SHARDS}
    assert 0 < len(killed_run.crf_done) < NUM_SHARDS


def test_the_killed_run_released_the_workspace_lock(killed_run):
    assert killed_run.lock_error is None, killed_run.lock_error


def test_every_output_left_by_the_kill_is_complete_with_its_lineage(killed_run):
    assert killed_run.problems == []


def test_a_write_killed_before_its_rename_leaves_only_an_ignored_temp_file(killed_run):
    run = killed_run
    assert run.injected_temp is not None and run.injected_target is not None
    assert not run.injected_target.exists(), "a killed write must not reach the final name"
    assert TEMP_NAME.match(run.injected_temp.name), run.injected_temp.name
    assert not run.injected_temp_readable, "the leftover should be a genuinely partial file"
    assert read_lineage(run.injected_target) is None  # so the shard counts as not done
    # Every stray file in maps/<stage>/ is an atomic_write temporary, and the readers
    # (shard_paths, used by evaluation and export) list only the final shard names.
    assert run.injected_temp.name in run.strays
    assert all(TEMP_NAME.match(name) for name in run.strays), run.strays
    for stage, listed in run.listed_by_readers.items():
        assert not set(listed) & set(run.strays), stage
        assert all(re.fullmatch(r"part-\d{5}\.parquet", name) for name in listed), listed
    assert run.listed_by_readers["crf"] == [f"part-{i:05d}.parquet" for i in run.crf_done]


def test_a_rerun_computes_only_the_crf_shards_missing_at_the_kill(killed_run, resumed):
    second, _ = resumed
    missing = NUM_SHARDS - len(killed_run.crf_done)
    assert second.trained is False
    assert second.computed_shards == {"cam": 0, "seeds": 0, "grown": 0, "crf": missing}
    assert second.evaluation is not None  # it read every shard; the temp file did not trip it
    config = PipelineConfig.from_yaml(killed_run.config_path)
    assert _inspect_outputs(killed_run.workspace, config) == []
    listed = shard_paths(killed_run.workspace.maps_dir("crf"))
    assert [p.name for p in listed] == [f"part-{i:05d}.parquet" for i in range(NUM_SHARDS)]
    # The re-run swept the killed write's temporary file (it held the lock, so no
    # write of its own was in progress).
    assert not killed_run.injected_temp.exists()
    assert not list((killed_run.workspace.root / "maps").rglob(".*.tmp"))


def test_outputs_are_readable_by_others_not_private_to_the_writer(killed_run, resumed):
    umask = os.umask(0)
    os.umask(umask)
    for path in [killed_run.workspace.manifest_path, *listed_outputs(killed_run.workspace)]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def listed_outputs(workspace: Workspace) -> list[Path]:
    return [p for stage in MAP_STAGES for p in shard_paths(workspace.maps_dir(stage))]


def test_a_third_run_computes_nothing(resumed):
    _, third = resumed
    assert third.trained is False
    assert third.computed_shards == {stage: 0 for stage in MAP_STAGES}
