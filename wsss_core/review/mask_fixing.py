"""`wsss review fix`: masks out to Label Studio as pre-annotations, corrections back.

Send: each chosen image's current final mask (its latest correction, else
the approved copy, else ``masks/<id>.png``) goes to the workspace's project as
a prediction, one brush region per class, over a copy of the image exactly as
the pipeline read it (``labelstudio/images/<id>.png``: orientation applied, so
mask and image line up). The mask as sent is kept in
``labelstudio/sent/<id>/<hash>.png`` and its hash rides in the task's data:
the task is the record of what went out, so a crash after the import loses
nothing and a run while tasks are out changes no task. An image with a task
in the project is not sent again; one that cannot be read is reported and
costs only itself.

Pull: every task's latest saved (not skipped) annotation is decoded
(:mod:`wsss_core.review.labelstudio_regions`), and each one not yet recorded
(its annotation id and update time form the correction's ``ref``) is stored
as a new version and recorded in ``reviews.parquet`` in one append, the
commit point: a pull that fails before it changes nothing, and a second pull
finds everything recorded. An annotation that cannot be read is reported by
image and task and costs only itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsss_core.data.images import load_label_map, load_rgb
from wsss_core.data.manifest import ImageRecord, read_manifest
from wsss_core.review.brush_rle import BrushDecodeError
from wsss_core.review.corrections import (
    current_corrections,
    refresh_corrected_copies,
    write_version,
)
from wsss_core.review.labelstudio_client import LabelStudioClient, LabelStudioError
from wsss_core.review.labelstudio_regions import (
    RegionError,
    label_map_of,
    labeling_config,
    regions_of,
)
from wsss_core.review.labelstudio_server import Server, server_dir
from wsss_core.review.reviews import (
    APPROVED,
    Correction,
    approved_mask_path,
    latest_reviews,
    record_corrections,
)
from wsss_core.store.atomic import write_bytes_atomic, write_png_atomic, write_text_atomic
from wsss_core.store.update_lock import exclusive_update
from wsss_core.store.workspace import Workspace

IMPORT_BATCH = 100  # tasks per import call
BASE_KEY = "wsss_base_sha256"  # task data: the hash of the mask sent


@dataclass(frozen=True)
class SendSummary:
    project_url: str
    sent: list[str]
    already_out: list[str]
    without_mask: list[str]
    failed: list[str] = field(default_factory=list)  # "image_id: problem", not sent


@dataclass(frozen=True)
class PullSummary:
    corrected: list[str]
    unchanged: int
    failed: list[str] = field(default_factory=list)  # one message per unreadable annotation
    on_older_mask: list[str] = field(default_factory=list)  # the pipeline's mask moved on since


def _projects_path(workspace: Workspace) -> Path:
    return server_dir(workspace) / "projects.json"


def images_dir(workspace: Workspace) -> Path:
    return server_dir(workspace) / "images"


def sent_mask_path(workspace: Workspace, image_id: str, sha256: str) -> Path:
    return server_dir(workspace) / "sent" / image_id / f"{sha256[:16]}.png"


def project_url(server: Server, project_id: int) -> str:
    return f"{server.url}/projects/{project_id}/data"


def _known_project(workspace: Workspace, server: Server, client: LabelStudioClient) -> int | None:
    path = _projects_path(workspace)
    projects = json.loads(path.read_text()) if path.exists() else {}
    project_id = projects.get(server.url)
    if project_id is None or client.project(int(project_id)) is None:
        return None
    return int(project_id)


def _project(
    workspace: Workspace, server: Server, client: LabelStudioClient, class_names: Sequence[str]
) -> int:
    """The workspace's project on ``server``: the recorded one, or one created now."""
    path = _projects_path(workspace)
    with exclusive_update(path):
        project_id = _known_project(workspace, server, client)
        if project_id is not None:
            return project_id
        folder = images_dir(workspace).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_relative_to(server.files_root):
            raise LabelStudioError(
                f"the server serves local files from {server.files_root}, which does not hold "
                f"{folder}: set review.labelstudio_files_root to the server's "
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
            )
        title = f"wsss {workspace.root.resolve().name}"[:50]
        project_id = client.create_project(title, labeling_config(class_names))
        client.add_local_storage(project_id, str(folder))
        projects = json.loads(path.read_text()) if path.exists() else {}
        write_text_atomic(path, json.dumps({**projects, server.url: project_id}, indent=2))
        return project_id


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def current_mask_file(workspace: Workspace, image_id: str) -> Path | None:
    """The image's final mask as a reviewer would fix it: corrected, approved, or the pipeline's."""
    corrected = current_corrections(workspace).get(image_id)
    if corrected is not None:
        return corrected.path
    review = latest_reviews(workspace).get(image_id)
    frozen = approved_mask_path(workspace, image_id)
    if review is not None and review.status == APPROVED and frozen.exists():
        return frozen
    mask = workspace.mask_path(image_id)
    return mask if mask.exists() else None


def _task(
    workspace: Workspace,
    server: Server,
    record: ImageRecord,
    mask_file: Path,
    class_names: Sequence[str],
) -> dict[str, Any]:
    label_map = load_label_map(mask_file)
    pixels = load_rgb(record.uri)
    if pixels.shape[:2] != label_map.shape:
        raise ValueError(
            f"{record.image_id}: mask {mask_file} is {label_map.shape}, image {record.uri} "
            f"{pixels.shape[:2]}"
        )
    image_file = images_dir(workspace) / f"{record.image_id}.png"
    write_png_atomic(image_file, Image.fromarray(pixels))
    sha256 = _file_sha256(mask_file)
    write_bytes_atomic(sent_mask_path(workspace, record.image_id, sha256), mask_file.read_bytes())
    relative = image_file.resolve().relative_to(server.files_root)
    return {
        "data": {
            "image": f"/data/local-files/?d={relative.as_posix()}",
            "image_id": record.image_id,
            BASE_KEY: sha256,
        },
        "predictions": [
            {"model_version": f"wsss {sha256[:12]}", "result": regions_of(label_map, class_names)}
        ],
    }


def send_for_fixing(
    workspace: Workspace,
    server: Server,
    image_ids: Sequence[str],
    say: Callable[[str], None] = print,
) -> SendSummary:
    """Send the images' current masks to the workspace's project (images already out are kept)."""
    manifest = read_manifest(workspace)
    records = manifest.by_id()
    unknown = [i for i in image_ids if i not in records]
    if unknown:
        raise KeyError(f"not in the manifest: {', '.join(unknown[:5])}")
    with server.client() as client:
        project_id = _project(workspace, server, client, manifest.class_names)
        out = {task["data"].get("image_id") for task in client.tasks(project_id)}
        already = [i for i in image_ids if i in out]
        tasks, without, failed = [], [], []
        for image_id in dict.fromkeys(i for i in image_ids if i not in out):
            mask_file = current_mask_file(workspace, image_id)
            if mask_file is None:
                without.append(image_id)
                continue
            try:
                task = _task(workspace, server, records[image_id], mask_file, manifest.class_names)
            except (OSError, ValueError) as error:  # one unreadable image costs only itself
                failed.append(f"{image_id}: {error}")
                continue
            tasks.append(task)
        for start in range(0, len(tasks), IMPORT_BATCH):
            client.import_tasks(project_id, tasks[start : start + IMPORT_BATCH])
            say(f"sent {min(start + IMPORT_BATCH, len(tasks))}/{len(tasks)}")
    sent = [task["data"]["image_id"] for task in tasks]
    return SendSummary(project_url(server, project_id), sent, already, without, failed)


def _latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    saved = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    return max(saved, key=lambda a: (a.get("updated_at") or "", a["id"])) if saved else None


def _timestamp(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _image_size(workspace: Workspace, record: ImageRecord) -> tuple[int, int]:
    sent_image = images_dir(workspace) / f"{record.image_id}.png"
    with Image.open(sent_image if sent_image.exists() else record.uri) as image:
        return image.height, image.width


def pull_corrections(
    workspace: Workspace, server: Server, say: Callable[[str], None] = print
) -> PullSummary | None:
    """Record every new correction in the project; None when nothing was ever sent there."""
    manifest = read_manifest(workspace)
    records = manifest.by_id()
    with server.client() as client:
        project_id = _known_project(workspace, server, client)
        if project_id is None:
            return None
        exported = client.export(project_id)
        emails = client.user_emails()
    recorded = {i: c.correction for i, c in current_corrections(workspace).items()}
    found: dict[str, tuple[Correction, np.ndarray]] = {}
    failed: list[str] = []
    unchanged = 0
    for task in exported:
        image_id = (task.get("data") or {}).get("image_id")
        annotation = _latest_annotation(task)
        if image_id not in records or annotation is None:
            continue
        ref = (
            f"{server.url} task {task['id']} annotation {annotation['id']} "
            f"updated {annotation.get('updated_at')}"
        )
        previous = recorded.get(image_id)
        if previous is not None and previous.ref == ref:
            unchanged += 1
            continue
        try:
            height, width = _image_size(workspace, records[image_id])
            label_map = label_map_of(annotation["result"], manifest.class_names, height, width)
        except (RegionError, BrushDecodeError, OSError) as error:
            failed.append(f"{image_id} (task {task['id']}): {error}")
            continue
        by = emails.get(annotation.get("completed_by") or -1, str(annotation.get("completed_by")))
        base = str(task["data"].get(BASE_KEY) or "")
        at = _timestamp(annotation.get("updated_at"))
        found[image_id] = (Correction("", base, by, at, ref), label_map)
    corrections = {}
    for image_id, (correction, label_map) in found.items():
        sha256 = write_version(workspace, image_id, label_map)  # before the record names it
        previous = recorded.get(image_id)
        if (
            previous is not None
            and previous.sha256 == sha256
            and previous.base_sha256 == correction.base_sha256
        ):
            unchanged += 1  # saved again without a change
            continue
        corrections[image_id] = Correction(
            sha256, correction.base_sha256, correction.by, correction.at, correction.ref
        )
    record_corrections(workspace, corrections)
    refresh_corrected_copies(workspace)
    older = [i for i, c in corrections.items() if made_on_older_mask(workspace, i, c)]
    for message in failed:
        say(f"correction not read: {message}")
    return PullSummary(sorted(corrections), unchanged, failed, sorted(older))


def made_on_older_mask(workspace: Workspace, image_id: str, correction: Correction) -> bool:
    """Whether the pipeline's mask changed since the one the correction was painted over."""
    mask = workspace.mask_path(image_id)
    return mask.exists() and _file_sha256(mask) != correction.base_sha256
