"""Test-wide settings: quiet offline Prefect and FiftyOne in throw-away directories.

Both read their settings at import time, so the environment is set here,
before any test module imports them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

_SCRATCH = Path(tempfile.mkdtemp(prefix="wsss-tests-"))
# Registered first, so it runs last: after FiftyOne has stopped its mongod.
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)

for _key, _value in {
    "PREFECT_HOME": str(_SCRATCH / "prefect"),
    "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(_SCRATCH / "prefect-results"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "FIFTYONE_DATABASE_DIR": str(_SCRATCH / "fiftyone-db"),
    "FIFTYONE_DO_NOT_TRACK": "true",
    "FIFTYONE_DATABASE_VALIDATION": "false",
}.items():
    os.environ[_key] = _value


@pytest.fixture(scope="session")
def fiftyone_database_dir() -> Path:
    """The one FiftyOne database this test process may use."""
    return Path(os.environ["FIFTYONE_DATABASE_DIR"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Gives a TCP port free now: two suites running at once must not serve Apps on one port."""
    return _free_port


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (starting one costs seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
