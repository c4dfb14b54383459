"""`wsss review fix`: send masks to Label Studio, `--pull` corrections, `--stop` its server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsss_core.config import PipelineConfig
    from wsss_core.review.labelstudio_server import Server
    from wsss_core.store.workspace import Workspace


def fix(args: argparse.Namespace, config: PipelineConfig) -> int:
    from wsss_core.review.labelstudio_server import connect, stop_local_server
    from wsss_core.store.workspace import Workspace

    workspace = Workspace(Path(args.workspace))
    if args.stop:
        stopped = stop_local_server(workspace)
        print("Label Studio stopped" if stopped else "no Label Studio running for this workspace")
        return 0
    workspace.require_manifest()  # before a server starts or a folder is made
    server = connect(workspace, config.review)
    if args.pull:
        return _pull(workspace, config, server)
    return _send(workspace, config, server, args.view)


def _image_ids(workspace: Workspace, config: PipelineConfig, view: str) -> list[str]:
    path = Path(view)
    if path.is_file():
        lines = (line.strip() for line in path.read_text().splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    from wsss_core.review.fiftyone_adapter import view_image_ids

    return view_image_ids(workspace, config.review, view)


def _send(workspace: Workspace, config: PipelineConfig, server: Server, view: str) -> int:
    from wsss_core.review.mask_fixing import send_for_fixing

    image_ids = _image_ids(workspace, config, view)
    summary = send_for_fixing(workspace, server, image_ids)
    print(
        f"{len(summary.sent)} sent, {len(summary.already_out)} already in the project, "
        f"{len(summary.without_mask)} without a mask yet, {len(summary.failed)} not readable "
        f"(of {len(image_ids)} in {view})"
    )
    if summary.not_in_manifest:
        print(f"not in the manifest (skipped): {_some(summary.not_in_manifest)}")
    for message in summary.failed:
        print(f"not sent: {message}")
    print(f"Label Studio project: {summary.project_url}")
    if server.login is not None:
        user, password_file = server.login
        print(f"log in as {user}; the password is in {password_file}")
        print(f"stop the server with: wsss review fix --workspace {workspace.root} --stop")
    print(f"then: wsss review fix --workspace {workspace.root} --pull")
    return 1 if summary.failed else 0


def _pull(workspace: Workspace, config: PipelineConfig, server: Server) -> int:
    from wsss_core.review.fiftyone_adapter import dataset_exists, show_corrections
    from wsss_core.review.mask_fixing import pull_corrections

    summary = pull_corrections(workspace, server)
    if summary is None:
        print("nothing was sent to this Label Studio yet: run `wsss review fix` first")
        return 0
    print(
        f"{len(summary.corrected)} correction(s) recorded in corrected/, "
        f"{summary.already_recorded} already recorded, {len(summary.failed)} not readable"
    )
    if summary.not_in_manifest:
        left = _some(summary.not_in_manifest)
        print(f"annotations of images no longer in the manifest (not read): {left}")
    if summary.on_older_mask:
        print(
            f"{len(summary.on_older_mask)} made on a mask a later run has changed (kept): "
            + _some(summary.on_older_mask)
        )
    if dataset_exists(workspace, config.review):
        show_corrections(workspace, config.review)
    return 1 if summary.failed else 0


def _some(image_ids: list[str], shown: int = 10) -> str:
    more = len(image_ids) - shown
    return ", ".join(image_ids[:shown]) + (f" and {more} more" if more > 0 else "")
