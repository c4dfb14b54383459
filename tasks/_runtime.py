"""Settings every task shares."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

# Stage outputs carry their lineage in the Parquet metadata and skip themselves
# when it is unchanged, which keys on content, not on argument strings.
TASK_DEFAULTS = {"cache_policy": NO_CACHE, "persist_result": False}
