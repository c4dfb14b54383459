"""Task: DSRG seed cues of one shard, from its CAMs."""

from __future__ import annotations

from tasks._shard import shard_task
from wsss_core.stages.seeds_stage import run_seeds_shard

seeds_shard = shard_task("seeds-shard", run_seeds_shard)
