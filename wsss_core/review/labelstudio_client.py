"""The few Label Studio HTTP API calls mask fixing needs (Label Studio 1.23).

Plain HTTP (httpx, already a dependency) rather than label-studio-sdk: the
calls are a handful, and the SDK would pull in a second HTTP stack, OpenCV and
NLTK for them. Every failure is a :class:`LabelStudioError` of one line naming the
call and the server, never the API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

PAGE_SIZE = 100
TIMEOUT_S = 60.0  # an export of a large project takes a while


class LabelStudioError(ConnectionError):
    """A Label Studio call failed; the message names the call and the server."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when the server answered


class LabelStudioClient:
    def __init__(self, url: str, api_key: str) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {api_key}"}, timeout=TIMEOUT_S
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise LabelStudioError(
                f"Label Studio at {self.url} did not answer {method} {path} "
                f"({type(error).__name__}: {error})"
            ) from None
        if response.status_code == 401:
            raise LabelStudioError(
                f"Label Studio at {self.url} refused the API key (401): for a server of "
                "your own check the variable review.labelstudio_api_key_env names; the "
                "started one keeps its key in <workspace>/labelstudio/login.json",
                401,
            )
        if response.is_error:
            raise LabelStudioError(
                f"Label Studio at {self.url}: {method} {path} answered "
                f"{response.status_code}: {response.text[:300]}",
                response.status_code,
            )
        return response.json() if response.content else None

    def healthy(self) -> bool:
        try:
            return self._http.get("/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def project(self, project_id: int) -> dict[str, Any] | None:
        """The project, or None when it was deleted."""
        try:
            return self._call("GET", f"/api/projects/{project_id}")
        except LabelStudioError as error:
            if error.status == 404:
                return None
            raise

    def create_project(self, title: str, label_config: str) -> int:
        created = self._call(
            "POST", "/api/projects", json={"title": title, "label_config": label_config}
        )
        return int(created["id"])

    def set_labeling_config(self, project_id: int, label_config: str) -> None:
        """Change the project's labels (refused while annotations use a label it drops)."""
        self._call("PATCH", f"/api/projects/{project_id}", json={"label_config": label_config})

    def delete_project(self, project_id: int) -> None:
        self._call("DELETE", f"/api/projects/{project_id}")

    def add_local_storage(self, project_id: int, folder: str) -> None:
        """Let the project's tasks read images under ``folder`` (the server's local files)."""
        self._call(
            "POST",
            "/api/storages/localfiles",
            json={
                "project": project_id,
                "path": folder,
                "title": "wsss images",
                "use_blob_urls": False,
            },
        )

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> int:
        imported = self._call("POST", f"/api/projects/{project_id}/import", json=list(tasks))
        return int(imported["task_count"])

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project (id and data), page by page."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            listed = self._call(
                "GET",
                "/api/tasks",
                params={"project": project_id, "page": page, "page_size": PAGE_SIZE},
            )
            found += listed["tasks"]
            if not listed["tasks"] or len(found) >= listed["total"]:
                return found
            page += 1

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """Every task with its annotations (JSON export, tasks without annotations too)."""
        return self._call(
            "GET",
            f"/api/projects/{project_id}/export",
            params={"exportType": "JSON", "download_all_tasks": "true"},
        )

    def user_emails(self) -> dict[int, str]:
        return {
            int(user["id"]): user.get("email") or "" for user in self._call("GET", "/api/users")
        }
