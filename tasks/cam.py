"""Task: class activation maps (CAM, Grad-CAM or Grad-CAM++) of one shard's images."""

from __future__ import annotations

from tasks._shard import shard_task
from wsss_core.stages.cam_stage import run_cam_shard

cam_shard = shard_task("cam-shard", run_cam_shard)
