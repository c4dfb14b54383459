"""`wsss review fix`: masks out to Label Studio as pre-annotations, corrections back.

Send: each chosen image's mask to fix (the reviewer's own, see
:func:`~wsss_core.review.corrections.reviewer_masks`, else ``masks/<id>.png``)
goes to the workspace's project as a prediction, one brush region per class,
over a copy of the image exactly as the pipeline read it
(``labelstudio/images/<id>.png``: orientation applied, so mask and image line
up). The mask as sent is kept in ``labelstudio/sent/<id>/<hash>.png``; the
task's data holds its hash and that of ``masks/<id>.png`` at the time: the
task is the record of what went out, so a crash after the import loses
nothing, a run while tasks are out changes no task, and a later run's new
mask marks a correction as made on an older one. An image with a task in the
project is not sent again; one that cannot be read is reported and costs only
itself. The project's brush labels follow the manifest's classes.

Pull: each image's newest saved (not skipped) annotation, over all its tasks,
is decoded (:mod:`wsss_core.review.labelstudio_regions`); each one not yet
recorded (its task, annotation id and update time form the correction's
``ref``) is stored as a new version, and all are recorded in
``reviews.parquet`` in one append, the commit point: a pull that fails before
it changes nothing, and a second pull finds everything recorded. An
annotation that cannot be read is reported by image and task and costs only
itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from wsss_core.data.images import load_label_map, load_rgb
from wsss_core.data.manifest import ImageRecord, file_sha256, read_manifest
from wsss_core.review.brush_rle import BrushDecodeError
from wsss_core.review.corrections import (
    ReviewerMask,
    current_corrections,
    made_on_older_mask,
    pipeline_mask_sha256,
    refresh_corrected_copies,
    reviewer_masks,
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
from wsss_core.review.reviews import Correction, record_corrections
from wsss_core.store.atomic import write_bytes_atomic, write_png_atomic, write_text_atomic
from wsss_core.store.update_lock import exclusive_update
from wsss_core.store.workspace import Workspace

IMPORT_BATCH = 100  # tasks per import call
BASE_KEY = "wsss_base_sha256"  # task data: the hash of the mask sent
PIPELINE_KEY = "wsss_pipeline_sha256"  # task data: the hash of masks/<id>.png then


@dataclass
class SendSummary:
    project_url: str
    sent: list[str]
    already_out: list[str]  # a task for it is in the project
    without_mask: list[str]
    not_in_manifest: list[str]
    failed: list[str]  # "image_id: problem", not sent


@dataclass
class PullSummary:
    corrected: list[str] = field(default_factory=list)
    already_recorded: int = 0
    not_in_manifest: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one message per unreadable annotation
    on_older_mask: list[str] = field(default_factory=list)  # a run changed the mask since


def _projects_path(workspace: Workspace) -> Path:
    return server_dir(workspace) / "projects.json"


def images_dir(workspace: Workspace) -> Path:
    return server_dir(workspace) / "images"


def sent_mask_path(workspace: Workspace, image_id: str, sha256: str) -> Path:
    return server_dir(workspace) / "sent" / image_id / f"{sha256[:16]}.png"


def project_url(server: Server, project_id: int) -> str:
    return f"{server.url}/projects/{project_id}/data"


def _recorded_projects(workspace: Workspace) -> dict[str, dict[str, Any]]:
    """``projects.json``: server key -> ``{"id": project id, "classes": [its brush classes]}``."""
    path = _projects_path(workspace)
    return json.loads(path.read_text()) if path.exists() else {}


def recorded_project_id(workspace: Workspace, server: Server) -> int | None:
    """The id of the workspace's project on ``server`` as recorded (the server not asked)."""
    recorded = _recorded_projects(workspace).get(server.project_key)
    return None if recorded is None else int(recorded["id"])


def _known_project(workspace: Workspace, server: Server, client: LabelStudioClient) -> int | None:
    """The workspace's recorded project on ``server``, unless it was deleted there."""
    project_id = recorded_project_id(workspace, server)
    if project_id is None or client.project(project_id) is None:
        return None
    return project_id


def _record_project(
    workspace: Workspace, server: Server, project_id: int, class_names: Sequence[str]
) -> None:
    projects = _recorded_projects(workspace)
    projects[server.project_key] = {"id": project_id, "classes": list(class_names)}
    write_text_atomic(_projects_path(workspace), json.dumps(projects, indent=2))


def _project(
    workspace: Workspace, server: Server, client: LabelStudioClient, class_names: Sequence[str]
) -> int:
    """The workspace's project on ``server``: the recorded one (its labels brought up to the
    manifest's classes), or one created now. The caller holds the projects.json lock."""
    project_id = _known_project(workspace, server, client)
    if project_id is not None:
        if _recorded_projects(workspace)[server.project_key]["classes"] != list(class_names):
            client.set_labeling_config(project_id, labeling_config(class_names))
            _record_project(workspace, server, project_id, class_names)
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
    try:
        client.add_local_storage(project_id, str(folder))
    except LabelStudioError:
        client.delete_project(project_id)  # else each retry leaves a project without images
        raise
    _record_project(workspace, server, project_id, class_names)
    return project_id


def _mask_to_fix(
    workspace: Workspace, image_id: str, reviewed: dict[str, ReviewerMask]
) -> Path | None:
    """What a reviewer fixes: their own mask (corrected, approved), else the pipeline's."""
    if image_id in reviewed:
        return reviewed[image_id].path
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
            f"mask {mask_file} is {label_map.shape}, image {record.uri} {pixels.shape[:2]}"
        )
    image_file = images_dir(workspace) / f"{record.image_id}.png"
    write_png_atomic(image_file, Image.fromarray(pixels))
    sha256 = file_sha256(mask_file)
    write_bytes_atomic(sent_mask_path(workspace, record.image_id, sha256), mask_file.read_bytes())
    relative = image_file.resolve().relative_to(server.files_root)
    return {
        "data": {
            "image": f"/data/local-files/?d={quote(relative.as_posix())}",
            "image_id": record.image_id,
            BASE_KEY: sha256,
            PIPELINE_KEY: pipeline_mask_sha256(workspace, record.image_id),
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
    chosen = list(dict.fromkeys(image_ids))
    reviewed = reviewer_masks(workspace)
    # One send at a time: two would both find an image not yet out and make two tasks.
    with exclusive_update(_projects_path(workspace)), server.client() as client:
        project_id = _project(workspace, server, client, manifest.class_names)
        out = {task["data"].get("image_id") for task in client.tasks(project_id)}
        tasks: list[dict[str, Any]] = []
        summary = SendSummary(project_url(server, project_id), [], [], [], [], [])
        for image_id in chosen:
            mask_file = _mask_to_fix(workspace, image_id, reviewed)
            if image_id not in records:
                summary.not_in_manifest.append(image_id)
            elif image_id in out:
                summary.already_out.append(image_id)
            elif mask_file is None:
                summary.without_mask.append(image_id)
            else:
                try:
                    tasks.append(
                        _task(workspace, server, records[image_id], mask_file, manifest.class_names)
                    )
                except (OSError, ValueError) as error:  # one unreadable image costs only itself
                    summary.failed.append(f"{image_id}: {error}")
        for start in range(0, len(tasks), IMPORT_BATCH):
            client.import_tasks(project_id, tasks[start : start + IMPORT_BATCH])
            say(f"sent {min(start + IMPORT_BATCH, len(tasks))}/{len(tasks)}")
    summary.sent.extend(task["data"]["image_id"] for task in tasks)
    return summary


def _annotation_order(annotation: dict[str, Any]) -> tuple[str, int]:
    return annotation.get("updated_at") or "", int(annotation["id"])


def _newest_annotations(
    exported: Sequence[dict[str, Any]],
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each image's newest saved (not skipped) annotation, with its task, over all its tasks."""
    newest: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for task in exported:
        image_id = (task.get("data") or {}).get("image_id")
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled") or image_id is None:
                continue
            best = newest.get(image_id)
            if best is None or _annotation_order(annotation) > _annotation_order(best[1]):
                newest[image_id] = (task, annotation)
    return newest


def _image_size(workspace: Workspace, record: ImageRecord) -> tuple[int, int]:
    """The size of the image the reviewer painted on (as sent: orientation applied)."""
    sent_image = images_dir(workspace) / f"{record.image_id}.png"
    if sent_image.exists():
        with Image.open(sent_image) as image:
            return image.height, image.width
    height, width = load_rgb(record.uri).shape[:2]
    return height, width


def _read_correction(
    workspace: Workspace,
    record: ImageRecord,
    class_names: Sequence[str],
    task: dict[str, Any],
    annotation: dict[str, Any],
) -> tuple[np.ndarray, str, str, datetime]:
    """The annotation's label map, the hashes the task was sent with, and when it was saved."""
    height, width = _image_size(workspace, record)
    label_map = label_map_of(annotation["result"], class_names, height, width)
    data = task["data"]
    saved = annotation.get("updated_at")
    at = datetime.fromisoformat(saved.replace("Z", "+00:00")) if saved else datetime.now(UTC)
    return label_map, str(data.get(BASE_KEY) or ""), str(data.get(PIPELINE_KEY) or ""), at


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
    corrections: dict[str, Correction] = {}
    summary = PullSummary()
    for image_id, (task, annotation) in sorted(_newest_annotations(exported).items()):
        if image_id not in records:
            summary.not_in_manifest.append(image_id)
            continue
        ref = (  # the server's key, not its URL: the started one may move to another port
            f"{server.project_key} project {project_id} task {task['id']} "
            f"annotation {annotation['id']} updated {annotation.get('updated_at')}"
        )
        previous = recorded.get(image_id)
        if previous is not None and previous.ref == ref:
            summary.already_recorded += 1
            continue
        try:
            label_map, base, pipeline, at = _read_correction(
                workspace, records[image_id], manifest.class_names, task, annotation
            )
        except (RegionError, BrushDecodeError, OSError, KeyError, TypeError, ValueError) as error:
            summary.failed.append(f"{image_id} (task {task['id']}): {error!r}")
            continue
        sha256 = write_version(workspace, image_id, label_map)  # before the record names it
        author = annotation.get("completed_by")
        by = emails.get(author, str(author)) if isinstance(author, int) else str(author)
        corrections[image_id] = Correction(sha256, base, pipeline, by, at.astimezone(UTC), ref)
    record_corrections(workspace, corrections)  # the commit: every correction read, or none
    refresh_corrected_copies(workspace, current_corrections(workspace))
    summary.corrected.extend(corrections)
    summary.on_older_mask.extend(
        i for i, c in corrections.items() if made_on_older_mask(workspace, i, c)
    )
    for message in summary.failed:
        say(f"correction not read: {message}")
    return summary
