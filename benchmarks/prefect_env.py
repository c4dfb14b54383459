"""Prefect and Dask settings for a benchmark's throw-away runs."""

from __future__ import annotations

import os
from pathlib import Path


def quiet_orchestration(home: Path) -> None:
    """Quiet, private Prefect (and Dask) settings; call before either is first imported."""
    os.environ.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            # Every cluster start and stop otherwise logs a screenful at INFO.
            "DASK_LOGGING__DISTRIBUTED": "warning",
        }
    )
    # A user's server would get these runs: use the benchmark's own temporary one.
    os.environ.pop("PREFECT_API_URL", None)
