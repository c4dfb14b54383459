"""One writer per workspace: a second run fails at once and says who holds it."""

from __future__ import annotations

import pytest

from wsss_core.data.manifest import write_manifest
from wsss_core.store.lock import WorkspaceLocked, workspace_lock
from wsss_core.store.workspace import Workspace


def test_second_holder_is_refused_and_the_lock_is_released(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    with (
        workspace_lock(workspace, "first run"),
        pytest.raises(WorkspaceLocked, match=r"in use \(first run, pid"),
        workspace_lock(workspace, "second run"),
    ):
        pass
    with workspace_lock(workspace, "after release"):  # free again
        pass


def test_a_run_on_a_locked_workspace_is_a_one_line_error(tmp_path, capsys, prefect_harness):
    from wsss_cli.main import main

    workspace = Workspace(tmp_path / "ws")
    write_manifest(workspace, [], ["cat"], {"kind": "test"})
    with workspace_lock(workspace, "scheduled run"):
        code = main(["run", "--workspace", str(workspace.root), "--no-publish"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("wsss run: error:") and "in use (scheduled run" in err
