"""Task: dense CRF of one shard into its final masks (``masks/<image_id>.png``)."""

from __future__ import annotations

from tasks._shard import shard_task
from wsss_core.stages.crf_stage import run_crf_shard

crf_shard = shard_task("crf-shard", run_crf_shard)
