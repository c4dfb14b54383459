"""Reviews recorded by several processes at once: no row of reviews.parquet or the manifest lost.

The library serialises its own read-modify-writes (``store/update_lock``), so
this holds for direct calls, with no flow and no workspace lock involved.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from wsss_core.data.manifest import ImageRecord, read_manifest, write_manifest
from wsss_core.review.reviews import NEEDS_FIX, ObservedReview, read_reviews, record_reviews
from wsss_core.store.lock import workspace_lock
from wsss_core.store.update_lock import exclusive_update
from wsss_core.store.workspace import Workspace

WRITERS = 2  # other processes; this test's own process records too
ROUNDS = 25  # record_reviews calls per writer, one new correction each

# One writer: waits for "go" so all start together, then records one label
# correction per call, each for an image of its own.
_WRITER = """
import sys
from pathlib import Path
from wsss_core.review.reviews import ObservedReview, record_reviews
from wsss_core.store.workspace import Workspace
workspace, name, rounds = Workspace(Path(sys.argv[1])), sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for index in range(rounds):
    fix = ObservedReview(frozenset({"needs-fix"}), labels=(1,), published_labels=(0,))
    record_reviews(workspace, {f"{name}_{index}": fix})
"""


def _image_ids(name: str) -> list[str]:
    return [f"{name}_{index}" for index in range(ROUNDS)]


def _workspace(root: Path, names: list[str]) -> Workspace:
    workspace = Workspace(root)
    records = [
        ImageRecord(image_id, f"/data/{image_id}.png", 8, 8, (0,), "train", "0" * 64)
        for name in names
        for image_id in _image_ids(name)
    ]
    write_manifest(workspace, records, ["cat", "dog"], {"kind": "test"})
    return workspace


def test_processes_recording_at_once_lose_no_review_and_no_correction(tmp_path: Path):
    names = [f"writer{n}" for n in range(WRITERS)] + ["parent"]
    workspace = _workspace(tmp_path / "ws", names)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(workspace.root), name, str(ROUNDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[1],
        )
        for name in names[:WRITERS]
    ]
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready"
        # A flow of this process holds the workspace lock: the others' direct
        # calls and its own still serialise on the update locks alone.
        with workspace_lock(workspace, "review sync"):
            for writer in writers:
                writer.stdin.write("go\n")
                writer.stdin.flush()
            fix = ObservedReview(frozenset({NEEDS_FIX}), labels=(1,), published_labels=(0,))
            for image_id in _image_ids("parent"):
                record_reviews(workspace, {image_id: fix})
        for writer in writers:
            assert writer.wait(timeout=120) == 0
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()

    expected = {image_id for name in names for image_id in _image_ids(name)}
    events = read_reviews(workspace)
    assert sorted(e.image_id for e in events) == sorted(expected)  # each once, none lost
    assert {e.status for e in events} == {NEEDS_FIX}
    manifest = read_manifest(workspace)
    assert {r.image_id: r.labels for r in manifest.all_rows} == dict.fromkeys(expected, (1,))


def test_the_update_lock_is_reentrant_for_its_thread_and_exclusive_for_others(tmp_path: Path):
    target = tmp_path / "table.parquet"
    entered = threading.Event()

    def update_from_another_thread() -> None:
        with exclusive_update(target):
            entered.set()

    with exclusive_update(target):
        with exclusive_update(target):  # the holder nests (record_reviews -> _append)
            pass
        other = threading.Thread(target=update_from_another_thread)
        other.start()
        assert not entered.wait(0.3)  # another thread waits while this one holds it
    assert entered.wait(10)
    other.join()
