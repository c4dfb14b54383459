"""The Label Studio server mask fixing talks to: one started for the workspace, or the user's.

Started server: ``label-studio start`` in the background, bound to 127.0.0.1,
SQLite and every file under ``<workspace>/labelstudio/``, update checks,
analytics and error reporting off, images served from that folder (local
files). It keeps running after the command, so reviewers can work; the next
`wsss review fix` finds it (``server.json``: process and port) or starts it
again on the same data. Its login and API token are made once and kept in
``labelstudio/login.json`` (owner-only), beside the database that holds them
anyway.

Existing server (``review.labelstudio_url``): its API key is read from the
environment variable ``review.labelstudio_api_key_env``, never stored in the
workspace or printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wsss_core.config import ReviewConfig
from wsss_core.review.labelstudio_client import LabelStudioClient, LabelStudioError
from wsss_core.store.atomic import write_text_atomic
from wsss_core.store.update_lock import exclusive_update
from wsss_core.store.workspace import Workspace

ADDRESS = "127.0.0.1"
START_TIMEOUT_S = 180.0  # the first start runs the database migrations (about 30 s here)
STOP_TIMEOUT_S = 20.0
LOCAL_USER = "wsss@localhost"
STARTED_SERVER_KEY = "started"
INSTALL_HINT = (
    "Label Studio is not installed: `make labelstudio` installs it in its own venv "
    "(.venv-labelstudio) and links `label-studio` beside this Python; or set "
    "review.labelstudio_command, or review.labelstudio_url for an existing server"
)
# Variables Label Studio also reads unprefixed: never pass the user's through.
SHADOWED_VARIABLES = ("USERNAME", "PASSWORD", "HOST", "PORT", "DJANGO_SETTINGS_MODULE")


class LabelStudioMissing(FileNotFoundError):
    """No label-studio command to start a server with."""


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str = field(repr=False)
    files_root: Path  # the server's local-files document root
    login: tuple[str, Path] | None = None  # started server: user, and the file with the password

    def client(self) -> LabelStudioClient:
        return LabelStudioClient(self.url, self.api_key)

    @property
    def project_key(self) -> str:
        """The server's name in the workspace's records: the started one keeps its projects
        when its port changes."""
        return STARTED_SERVER_KEY if self.login is not None else self.url.rstrip("/").lower()


def server_dir(workspace: Workspace) -> Path:
    return workspace.root / "labelstudio"


def _state_path(workspace: Workspace) -> Path:
    return server_dir(workspace) / "server.json"


def _login_path(workspace: Workspace) -> Path:
    return server_dir(workspace) / "login.json"


def find_label_studio(config: ReviewConfig) -> Path:
    """The label-studio executable: configured, beside this Python, or on PATH."""
    if config.labelstudio_command:
        command = Path(config.labelstudio_command).expanduser()
        if not command.exists():
            raise LabelStudioMissing(f"review.labelstudio_command {command} does not exist")
        return command
    beside = Path(sys.executable).with_name("label-studio")
    if beside.exists():
        return beside
    found = shutil.which("label-studio")
    if found:
        return Path(found)
    raise LabelStudioMissing(INSTALL_HINT)


def connect(
    workspace: Workspace, config: ReviewConfig, say: Callable[[str], None] = print
) -> Server:
    """The configured server, or the workspace's own (started when it is not running)."""
    if config.labelstudio_url:
        api_key = os.environ.get(config.labelstudio_api_key_env)
        if not api_key:
            raise LabelStudioError(
                f"review.labelstudio_url is set: put the server's API key in the environment "
                f"variable {config.labelstudio_api_key_env} (review.labelstudio_api_key_env)"
            )
        root = Path(config.labelstudio_files_root or server_dir(workspace)).expanduser().resolve()
        server = Server(config.labelstudio_url.rstrip("/"), api_key, root)
        with server.client() as client:
            if not client.healthy():
                raise LabelStudioError(f"Label Studio at {server.url} does not answer /health")
        return server
    return start_local_server(workspace, config, say)


def _login(workspace: Workspace) -> dict[str, str]:
    """The started server's user, password, API token and secret key (made once)."""
    path = _login_path(workspace)
    if path.exists():
        path.chmod(0o600)  # a kill right after the first write left it with the umask's mode
        return json.loads(path.read_text())
    login = {
        "user": LOCAL_USER,
        "password": secrets.token_urlsafe(12),
        "token": secrets.token_hex(20),  # the legacy token format: 40 hex digits
        "secret_key": secrets.token_urlsafe(32),
    }
    write_text_atomic(path, json.dumps(login, indent=2))
    path.chmod(0o600)
    return login


def _running(workspace: Workspace) -> dict[str, object] | None:
    """The recorded server, if its process is alive."""
    path = _state_path(workspace)
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    command_line = Path(f"/proc/{state['pid']}/cmdline")
    try:
        os.kill(int(state["pid"]), 0)
        if command_line.exists() and b"label-studio" not in command_line.read_bytes():
            return None  # the process id was reused by another program
    except (ProcessLookupError, PermissionError):
        return None
    return state


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ADDRESS, port))
        except OSError:
            return False
    return True


def _environment(data_dir: Path, login: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SHADOWED_VARIABLES}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=login["user"],
        LABEL_STUDIO_PASSWORD=login["password"],
        LABEL_STUDIO_USER_TOKEN=login["token"],
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",  # the token above works only with this
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(data_dir),
        LABEL_STUDIO_LATEST_VERSION_CHECK="false",
        LABEL_STUDIO_COLLECT_ANALYTICS="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        XDG_CONFIG_HOME=str(data_dir / "config"),  # it writes label-studio/user_id there
        SECRET_KEY=login["secret_key"],
    )
    return env


def start_local_server(
    workspace: Workspace, config: ReviewConfig, say: Callable[[str], None] = print
) -> Server:
    """The workspace's server: the running one, or one started now (waits until it answers)."""
    data_dir = server_dir(workspace).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_update(_state_path(workspace)):  # two commands never start two servers
        login = _login(workspace)
        state = _running(workspace)
        if state is None:
            state = _spawn(workspace, config, data_dir, login, say)
        url = f"http://{ADDRESS}:{state['port']}"
        server = Server(url, login["token"], data_dir, (login["user"], _login_path(workspace)))
        with server.client() as client:
            if not client.healthy() and not _wait_healthy(client, int(str(state["pid"]))):
                raise LabelStudioError(
                    f"Label Studio at {url} (process {state['pid']}) does not answer /health: "
                    f"see {data_dir / 'server.log'}"
                )
        return server


def _spawn(
    workspace: Workspace,
    config: ReviewConfig,
    data_dir: Path,
    login: dict[str, str],
    say: Callable[[str], None],
) -> dict[str, object]:
    command = find_label_studio(config)
    port = config.labelstudio_port
    if not _port_free(port):  # Label Studio would silently move to the next port
        raise LabelStudioError(
            f"port {port} on {ADDRESS} is in use: set review.labelstudio_port for this workspace"
        )
    first = not (data_dir / "ls.sqlite3").exists()
    say(
        f"starting Label Studio on {ADDRESS}:{port}"
        + (" (first start: database set-up, about 30 s)" if first else "")
    )
    args = [str(command), "start", "--no-browser", "--internal-host", ADDRESS, "--port", str(port)]
    args += ["--data-dir", str(data_dir), "--database", str(data_dir / "ls.sqlite3")]
    with open(data_dir / "server.log", "ab") as log:
        process = subprocess.Popen(
            args,
            env=_environment(data_dir, login),
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command; stopped by `--stop`
        )
    state: dict[str, object] = {"pid": process.pid, "port": port}
    with LabelStudioClient(f"http://{ADDRESS}:{port}", login["token"]) as client:
        if not _wait_healthy(client, process.pid):
            stop_process(process.pid)
            raise LabelStudioError(
                f"Label Studio did not start within {START_TIMEOUT_S:.0f} s: "
                f"see {data_dir / 'server.log'}"
            )
    write_text_atomic(_state_path(workspace), json.dumps(state))
    return state


def _wait_healthy(client: LabelStudioClient, pid: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if client.healthy():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False  # it exited: its log says why
        time.sleep(0.5)
    return False


def stop_process(pid: int) -> None:
    """Stop the server's process group (the server and its workers), politely first."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
        with contextlib.suppress(ChildProcessError):  # reap it when it is our child
            os.waitpid(pid, os.WNOHANG)
    os.killpg(pid, signal.SIGKILL)


def stop_local_server(workspace: Workspace) -> bool:
    """Stop the workspace's started server; False when none was running."""
    with exclusive_update(_state_path(workspace)):
        state = _running(workspace)
        _state_path(workspace).unlink(missing_ok=True)
        if state is None:
            return False
        stop_process(int(str(state["pid"])))
        return True
