"""One mongod per database folder: the FiftyOne database a workspace opens is its own.

FiftyOne (1.22) finds its local database by process, not by folder: before it
starts a ``mongod`` it looks for any running ``service/main.py --51-service db
--multi`` of the same user and attaches to the first one, whatever its
``--dbpath`` (``fiftyone.core.service.MultiClientService.start``). It then
exports that mongod's port as ``FIFTYONE_PRIVATE_DATABASE_PORT``, which child
processes inherit and connect to directly. So a second process with its own
``FIFTYONE_DATABASE_DIR`` silently used the first process's database, and
dataset names (global per database) collided between workspaces.

:func:`serve_database_dir` replaces that discovery: it attaches only to a
FiftyOne database service whose ``--dbpath`` is this folder, else starts one,
and points FiftyOne in this process at that port before FiftyOne connects.
One process can still use only one database: FiftyOne keeps a single
connection per process.

The port is read from the ``mongod`` process alone. FiftyOne takes the first
port any child of the service listens on, and a child caught between fork and
exec still holds the service's own IPC socket: a client then spoke the mongo
protocol to that socket and got pickles back (pymongo's "Got response id
-1946157056", a flaky failure seen in CI).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

PORT_VARIABLE = "FIFTYONE_PRIVATE_DATABASE_PORT"  # read by FiftyOne when it connects
MONGOD_START_SECONDS = 60.0  # FiftyOne's own wait for its database to listen

_served: dict[str, tuple[Any, int]] = {}  # folder -> (service kept alive, port), this process


def _dbpath(process: Any) -> str | None:
    """The ``--dbpath`` a FiftyOne database service process was started with."""
    import psutil

    try:
        cmdline = process.cmdline()
    except psutil.Error:
        return None
    if "--dbpath" not in cmdline[:-1]:
        return None
    return os.path.realpath(cmdline[cmdline.index("--dbpath") + 1])


def mongod_port(service: Any) -> int | None:
    """The port the ``mongod`` under a FiftyOne database service process listens on."""
    import fiftyone.service.util as fosu
    import psutil

    for child in service.children(recursive=True):
        try:
            if os.path.basename(child.exe()) != "mongod":
                continue  # e.g. a child not yet exec'd, holding the service's IPC socket
            for port in fosu.get_listening_tcp_ports(child):
                return port
        except psutil.Error:
            continue
    return None


def _service_class() -> type:
    import fiftyone.core.service as fos
    import fiftyone.service.util as fosu

    class FolderDatabaseService(fos.DatabaseService):
        """FiftyOne's database service that joins only a mongod on the same folder."""

        def __init__(self, database_dir: str) -> None:
            self.database_dir = database_dir
            super().__init__()

        def start(self) -> None:
            for process in fosu.find_processes_by_args(self._service_args):
                if _dbpath(process) != self.database_dir:
                    continue
                try:
                    registered = fosu.send_ipc_message(process, ("register", os.getpid()))
                except OSError:
                    continue  # exiting, or not a service after all
                if registered is True:
                    self.attached = True
                    self.child = process
                    return
            fos.Service.start(self)  # a new mongod, skipping FiftyOne's any-folder search

        @property
        def port(self) -> int:
            service = fosu.normalize_wrapper_process(self.child)
            deadline = time.monotonic() + MONGOD_START_SECONDS
            while (port := mongod_port(service)) is None:
                if time.monotonic() > deadline:
                    raise fos.ServiceListenTimeout(type(self).__name__)
                time.sleep(0.25)
            return port

    return FolderDatabaseService


def _connected_port() -> int | None:
    """The port FiftyOne in this process is already connected to, if it is."""
    import sys

    database = sys.modules.get("fiftyone.core.odm.database")
    if database is None or database._client is None:
        return None
    return database._connection_kwargs.get("port")


def _folder_on_port(port: int) -> str | None:
    """The folder of the FiftyOne database service (this user's) listening on ``port``."""
    import fiftyone.core.service as fos
    import fiftyone.service.util as fosu
    import psutil

    for process in fosu.find_processes_by_args(["--51-service", fos.DatabaseService.service_name]):
        try:
            children = process.children(recursive=True)
            if any(port in fosu.get_listening_tcp_ports(child) for child in children):
                return _dbpath(process)
        except psutil.Error:
            continue
    return None


def serve_database_dir(database_dir: Path) -> int:
    """Port of the mongod on ``database_dir`` (started if none runs); FiftyOne will use it.

    Must run before FiftyOne connects in this process, with
    ``FIFTYONE_DATABASE_DIR`` already set to ``database_dir``. Idempotent.
    """
    folder = os.path.realpath(database_dir)
    if folder in _served:
        return _served[folder][1]
    connected = _connected_port()
    if connected is not None:  # FiftyOne connected before us, by its own search
        serving = _folder_on_port(connected)
        if serving != folder:
            raise RuntimeError(
                f"FiftyOne in this process is already connected to the database in "
                f"{serving or 'an unknown folder'} (port {connected}); one process can use "
                f"one database (wanted {folder})"
            )
        _served[folder] = (None, connected)
        return connected
    if os.environ.get("FIFTYONE_DATABASE_DIR") != folder:
        raise RuntimeError(f"FIFTYONE_DATABASE_DIR must be {folder} before the database starts")
    # Held until the port is known, so two processes opening a fresh folder at once
    # start one mongod (a second one on the same folder would fail on its lock file).
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        service = _service_class()(folder)
        port = service.port
    finally:
        os.close(descriptor)  # releases the lock
    os.environ[PORT_VARIABLE] = str(port)  # replaces one inherited from a parent process
    _served[folder] = (service, port)
    return port
