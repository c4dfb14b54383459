"""One writer per workspace: a second run fails at once and says who holds it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from wsss_core.data.manifest import write_manifest
from wsss_core.store.lock import WorkspaceLocked, workspace_lock
from wsss_core.store.workspace import Workspace

_HOLDER = """
import sys
from pathlib import Path
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace
with workspace_lock(Workspace(Path(sys.argv[1])), sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()  # hold until the test closes our stdin
"""


@contextmanager
def held_by_another_process(workspace: Workspace, purpose: str) -> Iterator[None]:
    """Another process holds the workspace lock for the duration."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(workspace.root), purpose],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_second_holder_is_refused_and_the_lock_is_released(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    with (
        held_by_another_process(workspace, "first run"),
        pytest.raises(WorkspaceLocked, match=r"in use \(first run, pid"),
        workspace_lock(workspace, "second run"),
    ):
        pass
    with workspace_lock(workspace, "after release"):  # free again
        pass


def test_the_holding_process_may_reenter_and_releases_on_the_last_exit(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    with workspace_lock(workspace, "run"):
        with workspace_lock(workspace, "sub-flow"):
            pass
        # Still held after the inner exit: another process is refused.
        intruder = subprocess.run(
            [sys.executable, "-c", _HOLDER, str(workspace.root), "intruder"],
            input="\n",
            capture_output=True,
            text=True,
            cwd=Path(__file__).parents[1],
        )
        assert intruder.returncode != 0
        assert "WorkspaceLocked" in intruder.stderr and "in use (run, pid" in intruder.stderr
    # Released: another process can take it now.
    with held_by_another_process(workspace, "next run"):
        pass


def test_a_run_on_a_locked_workspace_is_a_one_line_error(tmp_path, capsys, prefect_harness):
    from wsss_cli.main import main

    workspace = Workspace(tmp_path / "ws")
    write_manifest(workspace, [], ["cat"], {"kind": "test"})
    with held_by_another_process(workspace, "scheduled run"):
        code = main(["run", "--workspace", str(workspace.root), "--no-publish"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("wsss run: error:") and "in use (scheduled run" in err


def test_another_thread_of_the_holding_process_is_refused(tmp_path):
    import threading

    workspace = Workspace(tmp_path / "ws")
    errors: list[BaseException] = []

    def second_run() -> None:
        try:
            with workspace_lock(workspace, "second run"):
                pass
        except WorkspaceLocked as error:
            errors.append(error)

    with workspace_lock(workspace, "first run"):
        thread = threading.Thread(target=second_run)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "in use" in str(errors[0])


def test_a_scheduled_review_sync_on_a_busy_workspace_is_skipped_not_failed(
    tmp_path, prefect_harness
):
    from flows.review_sync import review_sync

    workspace = Workspace(tmp_path / "ws")
    write_manifest(workspace, [], ["cat"], {"kind": "test"})
    with held_by_another_process(workspace, "weekly retrain"):
        skipped = review_sync(str(workspace.root), skip_when_busy=True, return_state=True)
        refused = review_sync(str(workspace.root), return_state=True)
    assert skipped.is_completed()
    assert skipped.message.startswith("skipped:") and "weekly retrain" in skipped.message
    assert refused.is_failed()  # asked by hand: the caller must hear it did not happen
    with pytest.raises(WorkspaceLocked):
        refused.result()
