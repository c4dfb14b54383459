"""Two workspaces served at once, by two processes: each has its own FiftyOne database.

FiftyOne alone joins any running mongod of the user, whatever its folder, so
these processes used to share one database (see ``fiftyone_database.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from wsss_core.config import ReviewConfig
from wsss_core.review.fiftyone_adapter import configure_database, start_app
from wsss_core.review.fiftyone_database import mongod_port
from wsss_core.store.workspace import Workspace

# Opens workspace argv[1], writes its mongod's port to argv[4].mongod, serves its App
# on port argv[2] with a dataset of argv[3] samples, writes argv[4].served, and
# stops when argv[5] appears.
SERVE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from wsss_core.config import ReviewConfig
    from wsss_core.review.fiftyone_adapter import configure_database, dataset_name_for, start_app
    from wsss_core.store.workspace import Workspace
    workspace, config = Workspace(Path(sys.argv[1])), ReviewConfig(port=int(sys.argv[2]))
    configure_database(workspace, config)
    import fiftyone as fo
    import fiftyone.core.odm.database as database
    fo.list_datasets()  # connects
    Path(sys.argv[4] + ".mongod").write_text(str(database._connection_kwargs["port"]))
    dataset = fo.Dataset(dataset_name_for(workspace, config), persistent=True)
    dataset.add_samples([fo.Sample(filepath=f"/none/{i}.png") for i in range(int(sys.argv[3]))])
    session = start_app(workspace, config)
    Path(sys.argv[4] + ".served").touch()
    while not Path(sys.argv[5]).exists():
        time.sleep(0.1)
    session.close()
    """
)

# Opens workspace argv[1], deletes its dataset, prints the datasets left, then
# asks for workspace argv[2]'s database too and prints the error.
DELETE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from wsss_core.config import ReviewConfig
    from wsss_core.review.fiftyone_adapter import configure_database, dataset_name_for
    from wsss_core.store.workspace import Workspace
    workspace = Workspace(Path(sys.argv[1]))
    configure_database(workspace, ReviewConfig())
    import fiftyone as fo
    fo.delete_dataset(dataset_name_for(workspace, ReviewConfig()))
    print(fo.list_datasets())
    try:
        configure_database(Workspace(Path(sys.argv[2])), ReviewConfig())
    except RuntimeError as error:
        print(error)
    """
)


# A stand-in service: listens as the real one does for IPC, then starts a child that
# inherits the listening socket and never execs, as a child caught between fork and
# exec; prints the port and waits for its stdin to close.
FORKING_SERVICE = textwrap.dedent(
    """
    import socket, subprocess, sys
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    sleeper = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    child = subprocess.Popen(sleeper, pass_fds=[listener.fileno()], stdin=subprocess.PIPE)
    print(listener.getsockname()[1], flush=True)
    sys.stdin.read()
    child.stdin.close()
    child.wait()
    """
)


def _app_datasets(port: int) -> dict[str, int]:
    """Dataset name -> sample count, as the App on ``port`` serves them."""
    query = '{ datasets(first: 20, search: "") { edges { node { name estimatedSampleCount } } } }'
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = json.load(response)
    assert reply.get("data"), reply
    edges = reply["data"]["datasets"]["edges"]
    return {e["node"]["name"]: e["node"]["estimatedSampleCount"] for e in edges}


def _child_env() -> dict[str, str]:
    # Each workspace's default database, <workspace>/fiftyone-db, not the suite's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_DATABASE")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _wait_for(path: Path, servers: dict[str, subprocess.Popen]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        for role, server in servers.items():
            assert server.poll() is None, f"{role} stopped: {server.communicate()[0]}"
        assert time.monotonic() < deadline, f"no {path.name} after 120 s"
        time.sleep(0.1)


def test_two_workspaces_served_at_once_keep_their_own_databases(tmp_path: Path, free_port):
    # Both folders are named "ws", so both datasets are "wsss-ws": names are per database.
    roots = {role: tmp_path / role / "ws" for role in ("a", "b")}
    samples = {"a": 1, "b": 2}
    ports = {role: free_port() for role in roots}
    stop = tmp_path / "stop"
    servers: dict[str, subprocess.Popen] = {}

    def serve(role: str, **env: str) -> None:
        args = [roots[role], ports[role], samples[role], tmp_path / role, stop]
        servers[role] = subprocess.Popen(
            [sys.executable, "-c", SERVE, *map(str, args)],
            env={**_child_env(), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    try:
        # b starts once a's mongod runs, so FiftyOne's own search would find a's, and
        # with a's port inherited, as from a parent process that had opened a.
        serve("a")
        _wait_for(tmp_path / "a.mongod", servers)
        serve("b", FIFTYONE_PRIVATE_DATABASE_PORT=(tmp_path / "a.mongod").read_text())
        for role in roots:
            _wait_for(tmp_path / f"{role}.served", servers)
        mongod = {role: int((tmp_path / f"{role}.mongod").read_text()) for role in roots}
        assert mongod["a"] != mongod["b"]
        assert _app_datasets(ports["a"]) == {"wsss-ws": 1}
        assert _app_datasets(ports["b"]) == {"wsss-ws": 2}

        # A second App on a taken port would silently show the other workspace's database.
        with pytest.raises(OSError, match=rf"port {ports['a']} on 127.0.0.1 is in use"):
            start_app(Workspace(tmp_path / "c"), ReviewConfig(port=ports["a"]))

        # A third process on b joins b's running mongod (a second one on b's folder
        # could not start) and deletes b's dataset only; it cannot open a's as well.
        deleted = subprocess.run(
            [sys.executable, "-c", DELETE, str(roots["b"]), str(roots["a"])],
            env=_child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert deleted.returncode == 0, deleted.stderr
        left, refused = deleted.stdout.strip().splitlines()[-2:]
        assert left == "[]"
        folders = {role: (root / "fiftyone-db").resolve() for role, root in roots.items()}
        assert refused == (
            f"FiftyOne is already using the database in {folders['b']}; one process can use "
            f"one database (wanted {folders['a']})"
        )
        assert _app_datasets(ports["b"]) == {}
        assert _app_datasets(ports["a"]) == {"wsss-ws": 1}
    finally:
        stop.touch()
        for server in servers.values():
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)  # ~300 MB per fresh database
    for role, server in servers.items():
        assert server.returncode == 0, f"{role}: {server.communicate()[0]}"


def test_a_child_holding_the_services_socket_is_not_taken_for_mongod():
    import fiftyone.service.util as fosu
    import psutil

    service = subprocess.Popen(
        [sys.executable, "-c", FORKING_SERVICE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ipc_port = int(service.stdout.readline())
        process = psutil.Process(service.pid)
        (child,) = process.children()
        # FiftyOne's own search (any child's listening port) would answer the IPC port.
        assert ipc_port in fosu.get_listening_tcp_ports(child)
        assert mongod_port(process) is None
    finally:
        service.stdin.close()
        service.wait(timeout=30)


def test_the_database_port_is_the_one_its_mongod_listens_on(tmp_path, fiftyone_database_dir):
    import fiftyone.core.service as fos
    import fiftyone.service.util as fosu

    configure_database(
        Workspace(tmp_path / "ws"), ReviewConfig(database_dir=str(fiftyone_database_dir))
    )
    import fiftyone as fo
    import fiftyone.core.odm.database as database

    fo.list_datasets()  # connects
    folder = os.path.realpath(fiftyone_database_dir)
    services = [
        process
        for process in fosu.find_processes_by_args(
            ["--51-service", fos.DatabaseService.service_name]
        )
        if folder in process.cmdline()
    ]
    assert [mongod_port(process) for process in services] == [database._connection_kwargs["port"]]
