"""Where a project's state lives: one directory, one path per artefact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wsss_core.store.atomic import remove_leftover_temp_files

# Stages that write per-shard map tables under maps/<stage>/, in pipeline order.
ALL_MAP_STAGES = ("cam", "affinity", "seeds", "grown", "crf")
OPTIONAL_MAP_STAGES = ("affinity",)  # only when their config section says enabled
# The stages every run computes (stages.common.map_stages adds the optional ones switched on).
MAP_STAGES = tuple(s for s in ALL_MAP_STAGES if s not in OPTIONAL_MAP_STAGES)


@dataclass(frozen=True)
class Workspace:
    """A workspace directory. Every stage reads and writes only through these paths."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def config_path(self) -> Path:
        """The config of the last run (``store/workspace_config.py``)."""
        return self.root / "config.yaml"

    @property
    def quarantine_path(self) -> Path:
        return self.root / "quarantine.parquet"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def model_path(self) -> Path:
        return self.models_dir / "classifier.pt"

    @property
    def candidate_model_path(self) -> Path:
        """The best model so far of an unfinished training run (not used by map stages)."""
        return self.models_dir / "candidate.pt"

    def affinity_head_path(self, lineage: str) -> Path:
        """The boundary head trained for ``lineage`` (classifier and settings), one file each."""
        return self.models_dir / "affinity" / f"{lineage}.pt"

    def segmentation_head_path(self, lineage: str) -> Path:
        """The self-training head trained for ``lineage`` (classifier, first pass, settings)."""
        return self.models_dir / "segmentation" / f"{lineage}.pt"

    @property
    def masks_dir(self) -> Path:
        return self.root / "masks"

    @property
    def ground_truth_dir(self) -> Path:
        """Ground truth the ingest had to write: rasterised COCO masks, re-oriented masks."""
        return self.root / "ground_truth"

    def ground_truth_path(self, image_id: str) -> Path:
        return self.ground_truth_dir / f"{image_id}.png"

    @property
    def evaluation_path(self) -> Path:
        return self.root / "evaluation.parquet"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def fiftyone_db_dir(self) -> Path:
        return self.root / "fiftyone-db"

    def maps_dir(self, stage: str) -> Path:
        if stage not in ALL_MAP_STAGES:
            raise ValueError(f"unknown map stage {stage!r}; expected one of {ALL_MAP_STAGES}")
        return self.root / "maps" / stage

    def shard_path(self, stage: str, shard_index: int) -> Path:
        return self.maps_dir(stage) / f"part-{shard_index:05d}.parquet"

    def mask_path(self, image_id: str) -> Path:
        return self.masks_dir / f"{image_id}.png"

    def remove_leftover_temp_files(self) -> int:
        """Sweep what killed writes left behind (hold the workspace lock); returns the count.

        Every folder the pipeline writes, but not ``fiftyone-db/``: MongoDB's
        files are its own business.
        """
        removed = remove_leftover_temp_files(self.root, recursive=False)
        written = (
            "maps",
            "models",
            "masks",
            "runs",
            "review",
            "approved",
            "ground_truth",
            "demo-source",
        )
        for name in written:
            removed += remove_leftover_temp_files(self.root / name)
        return removed

    def require_manifest(self) -> None:
        if not self.manifest_path.exists():
            raise FileNotFoundError(
                f"{self.manifest_path}: no manifest; ingest data first (wsss demo / wsss ingest)"
            )
