"""Task: DSRG seeded region growing of one shard, from its seeds and CAMs."""

from __future__ import annotations

from tasks._shard import shard_task
from wsss_core.stages.grow_stage import run_grow_shard

grow_shard = shard_task("grow-shard", run_grow_shard)
