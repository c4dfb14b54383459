"""Where per-shard tasks run: Prefect's thread pool, a local Dask cluster, or a remote one.

No ``from __future__ import annotations`` here: :class:`RunnerOptions` is a flow
parameter, and Prefect reads parameter annotations at run time.
"""

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, model_validator


class RunnerOptions(BaseModel):
    """How a flow runs its per-shard tasks (threads unless told otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["threads", "dask"] = Field(
        "threads", description="threads: one process; dask: a Dask cluster"
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="threads: shards at once (default: one per CPU core); "
        "dask: LocalCluster worker processes",
    )
    address: str | None = Field(
        None, description="an existing Dask scheduler (tcp://host:8786) instead of a LocalCluster"
    )

    @model_validator(mode="after")
    def _address_needs_dask(self) -> "RunnerOptions":
        if self.address and self.kind != "dask":
            raise ValueError("a Dask scheduler address needs kind 'dask'")
        if self.address and self.workers:
            raise ValueError("workers sizes a LocalCluster; a scheduler address has its own")
        return self


def default_thread_workers() -> int:
    """One shard at a time per CPU core this process may use.

    More threads would not compute faster (each CAM shard uses ``cam.cpu_threads``
    torch threads; the CRF holds the GIL) but would hold more shards' maps in
    memory at once: with no bound, every shard of a stage starts together.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()  # a container sees the host's cores but may use fewer
    return min(cores, quota) if quota else cores


def cgroup_cpu_limit(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """The CPUs a cgroup v2 quota allows (Docker ``--cpus``, Kubernetes limits), rounded up.

    None when there is no quota (``max``) or no cgroup v2 file to read.
    """
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def make_task_runner(options: RunnerOptions) -> TaskRunner:
    if options.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=options.workers or default_thread_workers())
    from prefect_dask import DaskTaskRunner  # imported only when asked for

    if options.address:
        return DaskTaskRunner(address=options.address)
    # One thread per worker process: CRF (pydensecrf) holds the GIL, so processes
    # are what scale it; ":0" keeps the dashboard off fixed ports.
    cluster = {"threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
    if options.workers:
        cluster["n_workers"] = options.workers
    return DaskTaskRunner(cluster_kwargs=cluster)


@contextmanager
def prefect_api_for_workers(startup_timeout: int = 90) -> Iterator[str]:
    """Make sure Dask worker processes can reach a Prefect API; yields its URL.

    Workers read ``PREFECT_API_URL`` from their environment. Without it each
    worker would start a temporary server of its own (slow, and its runs would
    not show in the parent's UI), so: export the URL this process already uses,
    or start one temporary server for the whole run and stop it afterwards.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    current = PREFECT_API_URL.value()
    if current:
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = current
        try:
            yield current
        finally:
            _restore_env("PREFECT_API_URL", previous)
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=startup_timeout)
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            os.environ["PREFECT_API_URL"] = server.api_url
            try:
                yield server.api_url
            finally:
                os.environ.pop("PREFECT_API_URL", None)
    finally:
        server.stop()


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
