"""`wsss review fix` on a real Label Studio server (started by `wsss review fix` itself).

Three needs-fix samples go out; one mask is changed through Label Studio's
HTTP API the way the editor saves it (an anti-aliased brush stroke, encoded by
Label Studio's own encoder); the pull brings it back pixel-exact, and it stays
through pulls, re-runs and exports. The tests run in file order on one
workspace.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from headless_chromium import chromium_or_skip
from labelstudio_editor import (
    antialiased_stroke,
    editor_rle,
    label_studio_or_skip,
)
from tiny_pipeline import tiny_review_config

from wsss_core.config import ReviewConfig, load_config
from wsss_core.data.images import load_label_map, voc_palette
from wsss_core.data.manifest import read_manifest
from wsss_core.review.brush_rle import STROKE_ALPHA_MIN, decode_mask
from wsss_core.review.corrections import corrected_mask_path, current_corrections
from wsss_core.review.labelstudio_server import connect
from wsss_core.review.mask_fixing import (
    BASE_KEY,
    PIPELINE_KEY,
    recorded_project_id,
    sent_mask_path,
)
from wsss_core.review.reviews import latest_reviews, reviews_path
from wsss_core.store.workspace import Workspace

DATASET = f"wsss-mask-fixing-{os.getpid()}"
CONFIG = tiny_review_config(seed=11)


def _main(*args: str) -> int:
    from wsss_cli.main import main

    return main(list(args))


def _client(server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Token {server.api_key}"}, timeout=60
    )


@pytest.fixture(scope="module")
def fixing(tmp_path_factory, prefect_harness, fiftyone_database_dir, free_port):
    """A published run, three samples tagged needs-fix, then `wsss review fix` sends them."""
    import fiftyone as fo

    from flows.pseudo_label import pseudo_label

    review = {
        "database_dir": str(fiftyone_database_dir),
        "dataset_name": DATASET,
        "labelstudio_port": free_port(),
    }
    command = label_studio_or_skip(ReviewConfig(**review))
    root = tmp_path_factory.mktemp("fixing")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "review": review}))
    workspace = Workspace(root / "ws")
    pseudo_label(workspace=str(workspace.root), config_file=str(config), demo=True)

    dataset = fo.load_dataset(DATASET)
    chosen = sorted(dataset.values("image_id"))[:3]
    for sample in dataset.select_by("image_id", chosen):
        sample.tags.append("needs-fix")
        sample.save()
    try:
        assert _main("review", "fix", "--workspace", str(workspace.root)) == 0
        server = connect(workspace, load_config(config).review)
        with _client(server) as client:
            project_id = recorded_project_id(workspace, server)
            tasks = client.get("/api/tasks", params={"project": project_id}).json()["tasks"]
        yield {
            "workspace": workspace,
            "root": root,
            "config": config,
            "server": server,
            "project_id": project_id,
            "tasks": {t["data"]["image_id"]: t for t in tasks},
            "chosen": chosen,
            "command": command,
            "class_names": read_manifest(workspace).class_names,
        }
    finally:
        _main("review", "fix", "--workspace", str(workspace.root), "--stop")
        dataset.delete()


def _predicted_map(client: httpx.Client, task_id: int, class_names, shape) -> np.ndarray:
    """The label map of a task's prediction, decoded region by region."""
    predictions = client.get("/api/predictions", params={"task": task_id}).json()
    assert len(predictions) == 1
    label_map = np.zeros(shape, dtype=np.uint8)
    values = {name: i + 1 for i, name in enumerate(class_names)} | {"ignore": 255}
    for region in predictions[0]["result"]:
        inside = decode_mask(region["value"]["rle"], *shape)
        label_map[inside] = values[region["value"]["brushlabels"][0]]
    return label_map


def test_send_makes_one_task_per_sample_with_its_mask(fixing):
    workspace, tasks = fixing["workspace"], fixing["tasks"]
    assert sorted(tasks) == fixing["chosen"]
    with _client(fixing["server"]) as client:
        for image_id, task in tasks.items():
            mask = load_label_map(workspace.mask_path(image_id))
            shown = _predicted_map(client, task["id"], fixing["class_names"], mask.shape)
            np.testing.assert_array_equal(shown, mask)
            # The image the editor shows is the one the mask was made on, served by the server.
            image = client.get(task["data"]["image"])
            assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
            assert sent_mask_path(workspace, image_id, task["data"][BASE_KEY]).exists()
    # Sending again sends nothing: the images are out already.
    assert _main("review", "fix", "--workspace", str(workspace.root)) == 0
    with _client(fixing["server"]) as client:
        listed = client.get("/api/tasks", params={"project": fixing["project_id"]}).json()
    assert listed["total"] == 3


def _result(fixing, regions: list[tuple[str, np.ndarray]]) -> list[dict]:
    """An annotation's result as the editor saves it: one brush region per (label, RGBA)."""
    return [
        {
            "from_name": "mask",
            "to_name": "image",
            "type": "brushlabels",
            "original_width": rgba.shape[1],
            "original_height": rgba.shape[0],
            "image_rotation": 0,
            "value": {
                "format": "rle",
                "rle": editor_rle(fixing["command"], rgba),
                "brushlabels": [name],
            },
        }
        for name, rgba in regions
    ]


def _painting(label_map: np.ndarray, class_names) -> list[tuple[str, np.ndarray]]:
    """Opaque regions that paint ``label_map`` exactly (classes, then ignore)."""
    regions = []
    for value in sorted(set(np.unique(label_map).tolist()) - {0}):
        rgba = np.zeros((*label_map.shape, 4), dtype=np.uint8)
        rgba[label_map == value] = 255
        regions.append(("ignore" if value == 255 else class_names[value - 1], rgba))
    return regions


def _expected_correction(fixing) -> tuple[str, np.ndarray, list[dict]]:
    """One image's new mask: its mask, a class painted as a soft stroke, a corner ignored."""
    image_id = fixing["chosen"][0]
    mask = load_label_map(fixing["workspace"].mask_path(image_id)).copy()
    mask[mask == 255] = 0
    height, width = mask.shape
    names = fixing["class_names"]
    stroke = antialiased_stroke(height, width, (height // 2, width // 3), radius=9.0)
    assert ((stroke[..., 3] > 0) & (stroke[..., 3] < STROKE_ALPHA_MIN)).any()  # a soft edge
    corner = np.zeros((height, width, 4), dtype=np.uint8)
    corner[:6, :6] = 255
    painted = names[-1]
    regions = [*_painting(mask, names), (painted, stroke), ("ignore", corner)]
    expected = mask.copy()
    expected[stroke[..., 3] >= STROKE_ALPHA_MIN] = names.index(painted) + 1  # listed later: wins
    expected[:6, :6] = 255
    return image_id, expected, _result(fixing, regions)


def test_a_correction_arrives_pixel_exact(fixing, tmp_path):
    import fiftyone as fo

    workspace = fixing["workspace"]
    image_id, expected, result = _expected_correction(fixing)
    task = fixing["tasks"][image_id]
    with _client(fixing["server"]) as client:
        saved = client.post(f"/api/tasks/{task['id']}/annotations", json={"result": result})
        assert saved.status_code == 201, saved.text
    fixing["annotation_id"] = saved.json()["id"]
    untouched = {i: load_label_map(workspace.mask_path(i)) for i in fixing["chosen"][1:]}
    status = latest_reviews(workspace).get(image_id)

    assert _main("review", "fix", "--workspace", str(workspace.root), "--pull") == 0

    np.testing.assert_array_equal(
        load_label_map(corrected_mask_path(workspace, image_id)), expected
    )
    event = latest_reviews(workspace)[image_id]
    assert event.status == (status.status if status else "unreviewed")  # tags are the sync's
    assert event.correction.by == "wsss@localhost"
    assert event.correction.base_sha256 == task["data"][BASE_KEY]
    assert event.correction.pipeline_sha256 == task["data"][PIPELINE_KEY]
    assert f"annotation {fixing['annotation_id']}" in event.correction.ref
    # In FiftyOne as its own field (the immutable version file the record names).
    sample = fo.load_dataset(DATASET).select_by("image_id", [image_id]).first()
    version = current_corrections(workspace)[image_id].path
    assert Path(sample["corrected_mask"].mask_path) == version
    assert sample["corrected_on_older_mask"] is False
    # Exported in preference to the pseudo-mask, and with --only-approved.
    for extra in ([], ["--only-approved"]):
        out = tmp_path / f"export{len(extra)}"
        assert _main("export", "--workspace", str(workspace.root), "--out", str(out), *extra) == 0
        np.testing.assert_array_equal(
            load_label_map(out / "SegmentationClass" / f"{image_id}.png"), expected
        )
    assert sorted(p.stem for p in (out / "SegmentationClass").glob("*.png")) == [image_id]
    # The samples nobody touched stay as they were.
    for other, mask in untouched.items():
        assert not corrected_mask_path(workspace, other).exists()
        np.testing.assert_array_equal(load_label_map(workspace.mask_path(other)), mask)
    fixing["expected"] = expected


def test_pulling_twice_changes_nothing(fixing, capsys):
    workspace = fixing["workspace"]
    before = reviews_path(workspace).read_bytes()
    assert _main("review", "fix", "--workspace", str(workspace.root), "--pull") == 0
    assert "0 correction(s) recorded" in capsys.readouterr().out
    assert reviews_path(workspace).read_bytes() == before


def test_tune_and_the_quality_estimate_count_it_as_a_true_mask(fixing):
    from wsss_core.review.corrections import CORRECTED_MASK
    from wsss_core.tuning.truth import true_masks

    workspace, image_id = fixing["workspace"], fixing["chosen"][0]
    manifest = read_manifest(workspace)
    assert true_masks(workspace, manifest)[0].source == "ground truth"  # the demo has it: it wins
    # A user's images have no ground truth: then the correction is the image's true mask.
    without = [replace(r, gt_uri=None) for r in manifest.records]
    masks = {m.image_id: m for m in true_masks(workspace, replace(manifest, records=without))}
    assert sorted(masks) == [image_id]
    assert masks[image_id].source == CORRECTED_MASK
    np.testing.assert_array_equal(load_label_map(masks[image_id].path), fixing["expected"])


def test_a_rerun_keeps_the_correction_and_the_tasks_as_sent(fixing):
    from flows.pseudo_label import pseudo_label

    workspace, image_id = fixing["workspace"], fixing["chosen"][0]
    config = fixing["root"] / "config2.yaml"
    settings = yaml.safe_load(fixing["config"].read_text())
    config.write_text(yaml.safe_dump({**settings, "crf": {"bilateral_srgb": 3.0}}))
    sent = {i: t["data"][BASE_KEY] for i, t in fixing["tasks"].items()}
    before = {i: load_label_map(sent_mask_path(workspace, i, sha)) for i, sha in sent.items()}

    result = pseudo_label(workspace=str(workspace.root), config_file=str(config))
    assert result.computed_shards["crf"] == 2

    np.testing.assert_array_equal(
        load_label_map(corrected_mask_path(workspace, image_id)), fixing["expected"]
    )
    with _client(fixing["server"]) as client:
        for other, task in fixing["tasks"].items():
            shown = _predicted_map(client, task["id"], fixing["class_names"], before[other].shape)
            np.testing.assert_array_equal(shown, before[other])
    changed = [
        i for i in sent if not np.array_equal(load_label_map(workspace.mask_path(i)), before[i])
    ]
    assert changed, "the new CRF setting should change some mask"


def test_an_edit_after_a_pull_comes_back_as_a_new_version(fixing, capsys):
    import fiftyone as fo

    workspace, image_id = fixing["workspace"], fixing["chosen"][0]
    expected = fixing["expected"].copy()
    extra = np.zeros((*expected.shape, 4), dtype=np.uint8)
    extra[-8:, -8:] = 255
    expected[-8:, -8:] = 1
    names = fixing["class_names"]
    result = _result(fixing, [*_painting(fixing["expected"], names), (names[0], extra)])
    time.sleep(1.1)  # a later update time, as a reviewer's edit has
    with _client(fixing["server"]) as client:
        patched = client.patch(
            f"/api/annotations/{fixing['annotation_id']}", json={"result": result}
        )
        assert patched.status_code == 200, patched.text

    assert _main("review", "fix", "--workspace", str(workspace.root), "--pull") == 0
    out = capsys.readouterr().out
    assert "1 correction(s) recorded" in out
    assert "made on a mask a later run has changed" in out  # the re-run above changed it
    sample = fo.load_dataset(DATASET).select_by("image_id", [image_id]).first()
    assert sample["corrected_on_older_mask"] is True
    np.testing.assert_array_equal(
        load_label_map(corrected_mask_path(workspace, image_id)), expected
    )
    rows = [
        r for r in pq.read_table(reviews_path(workspace)).to_pylist() if r["image_id"] == image_id
    ]
    versions = [r["corrected_sha256"] for r in rows if r["corrected_sha256"]]
    assert len(set(versions)) == 2
    assert len(list((workspace.root / "corrected/versions" / image_id).glob("*.png"))) == 2
    fixing["expected"] = expected


def test_a_pull_that_fails_half_way_changes_nothing(fixing, monkeypatch):
    import wsss_core.review.mask_fixing as mask_fixing

    workspace, image_id = fixing["workspace"], fixing["chosen"][1]
    mask = load_label_map(workspace.mask_path(image_id))
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask.shape[0] // 2 :] = 255
    result = _result(fixing, [(fixing["class_names"][2], rgba)])
    with _client(fixing["server"]) as client:
        task_id = fixing["tasks"][image_id]["id"]
        saved = client.post(f"/api/tasks/{task_id}/annotations", json={"result": result})
        assert saved.status_code == 201
    record = reviews_path(workspace).read_bytes()

    def killed(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(mask_fixing, "record_corrections", killed)
    assert _main("review", "fix", "--workspace", str(workspace.root), "--pull") == 1
    assert reviews_path(workspace).read_bytes() == record
    assert not corrected_mask_path(workspace, image_id).exists()
    assert image_id not in current_corrections(workspace)

    monkeypatch.undo()
    assert _main("review", "fix", "--workspace", str(workspace.root), "--pull") == 0
    assert image_id in current_corrections(workspace)


def _login_cookie(url: str, user: str, password: str) -> str:
    with httpx.Client(base_url=url, follow_redirects=True, timeout=60) as browser:
        page = browser.get("/user/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        browser.post(
            "/user/login/",
            data={"csrfmiddlewaretoken": csrf, "email": user, "password": password},
            headers={"Referer": f"{url}/user/login/"},
        )
        return browser.cookies["sessionid"]


# Counts, per canvas of the editor, the pixels painted in a colour (the region layer).
CANVAS_PIXELS = """(() => JSON.stringify([...document.querySelectorAll('canvas')].map(c => {
  try {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4)
      if (d[i + 3] > 0 && Math.abs(d[i] - %d) < 40 && Math.abs(d[i + 1] - %d) < 40
          && Math.abs(d[i + 2] - %d) < 40) n++;
    return n;
  } catch (e) { return -1; }
})))()"""


def test_the_editor_draws_the_mask(fixing, tmp_path, free_port):
    """Headless Chromium, logged in, opens the corrected task: the class's region is drawn."""
    from websockets.sync.client import connect as websocket

    chromium = chromium_or_skip()
    server, image_id = fixing["server"], fixing["chosen"][0]
    user, password_file = server.login
    cookie = _login_cookie(server.url, user, json.loads(password_file.read_text())["password"])
    painted = int(np.bincount(fixing["expected"].ravel(), minlength=256)[1:255].argmax()) + 1
    colour = voc_palette()[painted * 3 : painted * 3 + 3]
    port = free_port()
    browser = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        page = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        with websocket(page, max_size=64_000_000) as session:
            calls = iter(range(1, 1_000_000))

            def call(method: str, **params):
                number = next(calls)
                session.send(json.dumps({"id": number, "method": method, "params": params}))
                while True:
                    message = json.loads(session.recv(timeout=120))
                    if message.get("id") == number:
                        return message["result"]

            call("Network.enable")
            call("Network.setCookie", name="sessionid", value=cookie, domain="127.0.0.1", path="/")
            task = fixing["tasks"][image_id]["id"]
            call(
                "Page.navigate",
                url=f"{server.url}/projects/{fixing['project_id']}/data?task={task}",
            )
            counts: list[int] = []
            for _ in range(30):  # the editor renders within seconds; a busy machine takes longer
                time.sleep(2)
                found = call(
                    "Runtime.evaluate", expression=CANVAS_PIXELS % tuple(colour), returnByValue=True
                )
                counts = json.loads(found["result"].get("value") or "[]")
                if counts and max(counts) > 1000:
                    break
            shot = call("Page.captureScreenshot", format="png")
            (tmp_path / "editor.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.terminate()
        browser.wait(timeout=30)
    assert counts and max(counts) > 1000, f"no canvas drew the class colour {colour}: {counts}"


def test_an_unreadable_image_costs_only_itself(fixing, monkeypatch):
    from wsss_core.review import mask_fixing

    workspace, server = fixing["workspace"], fixing["server"]
    records = read_manifest(workspace).by_id()
    unsent = [i for i in sorted(records) if i not in fixing["tasks"]][:2]
    broken, good = unsent
    read_pixels = mask_fixing.load_rgb

    def load_rgb(uri):
        if uri == records[broken].uri:
            raise OSError(f"{uri}: truncated file")
        return read_pixels(uri)

    monkeypatch.setattr(mask_fixing, "load_rgb", load_rgb)
    summary = mask_fixing.send_for_fixing(workspace, server, unsent, say=lambda _: None)
    assert summary.sent == [good]
    assert len(summary.failed) == 1 and summary.failed[0].startswith(f"{broken}: ")
    assert "truncated file" in summary.failed[0]


def test_the_started_server_keeps_its_project_on_another_port(fixing, free_port, capsys):
    root = str(fixing["workspace"].root)
    assert _main("review", "fix", "--workspace", root, "--stop") == 0
    other_port = fixing["root"] / "other-port.yaml"
    other_port.write_text(yaml.safe_dump({"review": {"labelstudio_port": free_port()}}))
    assert _main("review", "fix", "--workspace", root, "--config", str(other_port), "--pull") == 0
    out = capsys.readouterr().out
    assert re.search(r"0 correction\(s\) recorded in corrected/, [1-9]\d* already recorded", out)
