"""Where `wsss compare` keeps its work, apart from the workspace's own files.

Under the compare directory (default ``WS/compare/``)::

    models/<train hash>/classifier.pt, last.pt, ...   trained for a train section the
                                                      workspace's classifier was not
    <images>/manifest.parquet                         the workspace's manifest, or the
                                                      chosen images' rows of it
    <images>/shards-<size>/maps/<stage>/<stage hash>/part-NNNNN.parquet
    <images>/shards-<size>/maps/<stage>/<stage hash>/part-NNNNN.cost.json
    <images>/shards-<size>/masks/<final stage hash>/<image_id>.png
    <images>/shards-<size>/affinity/<head lineage>.pt      the affinity head, learnt
                                                      from these images' CAMs
    <images>/shards-<size>/segmentation/<lineage>.pt  the self-training head, learnt
                                                      from their first-pass masks
    <images>/shards-<size>/maps/<stage>/<stage hash>-a<digest>-s<digest>/...
                                                      `wsss tune`'s maps, made with
                                                      given head files (FrozenHeads)

``<images>`` is ``all`` or a hash of the chosen ids; ``<stage hash>`` is
``stage_config_hash(config, stage)``, so configs that agree on a stage's
sections share its shards. ``shard_size`` decides which images share a CAM
batch, and batch mates move CAMs in the last float bits: shards of other sizes
are other files.

A :class:`ComparisonWorkspace` is one config's view: every path the stages
use is one of the above, and any path it does not override derives from its
root under the compare directory, so nothing a stage writes can land in the
workspace.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wsss_core.config import PipelineConfig, stage_config_hash
from wsss_core.store.atomic import write_text_atomic
from wsss_core.store.maps import read_lineage
from wsss_core.store.workspace import ALL_MAP_STAGES, MAP_STAGES, Workspace

COMPARE_DIR = "compare"  # the default compare directory, inside the workspace


@dataclass(frozen=True)
class ComparisonWorkspace(Workspace):
    """One config's maps of a compared image set (root: ``<images>/shards-<size>``)."""

    config: PipelineConfig
    manifest_file: Path
    classifier: Path  # the checkpoint the map stages load (maybe the workspace's, read only)
    models: Path  # where training for this config writes (never the workspace's models/)

    @property
    def manifest_path(self) -> Path:
        return self.manifest_file

    @property
    def models_dir(self) -> Path:
        return self.models

    @property
    def model_path(self) -> Path:
        return self.classifier

    @property
    def masks_dir(self) -> Path:
        # The last stage writes the masks.
        return self.root / "masks" / stage_config_hash(self.config, MAP_STAGES[-1])

    def maps_dir(self, stage: str) -> Path:
        return super().maps_dir(stage) / stage_config_hash(self.config, stage)

    def affinity_head_path(self, lineage: str) -> Path:
        # The head learns from the compared images' CAMs: one per image set, so a head
        # trained on a `--limit` subset is never reused for all the images.
        return self.root / "affinity" / f"{lineage}.pt"

    def segmentation_head_path(self, lineage: str) -> Path:
        # Learnt from the compared images' first-pass masks: one per image set, as above.
        return self.root / "segmentation" / f"{lineage}.pt"


@dataclass(frozen=True)
class FrozenHeads:
    """Head files a view's config uses instead of training its own (`wsss tune`).

    A head trained on a few compared images is weaker than the one a run trains
    on the workspace's, so tune gives each config the heads a run of it has
    (``stages/tune_heads.py``). Their digests name the maps they shape (the
    affinity head: the affinity stage and those after it; the self-training
    head: the crf stage), so maps made with other heads are never read back as
    these.
    """

    affinity: Path | None = None
    segmentation: Path | None = None
    digests: dict[str, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        named = {"a": self.affinity, "s": self.segmentation}
        digests = {key: _file_digest(path) for key, path in named.items() if path is not None}
        object.__setattr__(self, "digests", digests)

    def suffix(self, stage: str) -> str:
        """What to add to ``stage``'s maps directory name: empty where no frozen head acts."""
        acting = []
        if "a" in self.digests and _at_or_after(stage, "affinity"):
            acting.append(f"a{self.digests['a']}")
        if "s" in self.digests and stage == "crf":
            acting.append(f"s{self.digests['s']}")
        return "".join(f"-{part}" for part in acting)


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError as error:
        raise ValueError(f"{path}: cannot read the head file: {error}") from error


def _at_or_after(stage: str, first: str) -> bool:
    return ALL_MAP_STAGES.index(stage) >= ALL_MAP_STAGES.index(first)


@dataclass(frozen=True)
class FrozenHeadsView(ComparisonWorkspace):
    """A view whose stages load the given head files instead of training their own."""

    heads: FrozenHeads = FrozenHeads()

    @property
    def masks_dir(self) -> Path:
        base = super().masks_dir
        return base.with_name(base.name + self.heads.suffix(MAP_STAGES[-1]))

    def maps_dir(self, stage: str) -> Path:
        base = super().maps_dir(stage)
        return base.with_name(base.name + self.heads.suffix(stage))

    def affinity_head_path(self, lineage: str) -> Path:
        return self.heads.affinity or super().affinity_head_path(lineage)

    def segmentation_head_path(self, lineage: str) -> Path:
        return self.heads.segmentation or super().segmentation_head_path(lineage)


@dataclass(frozen=True)
class TrainingWorkspace(Workspace):
    """Trains into ``root`` from another workspace's manifest, which it only reads."""

    manifest_file: Path

    @property
    def manifest_path(self) -> Path:
        return self.manifest_file

    @property
    def models_dir(self) -> Path:
        return self.root


@dataclass(frozen=True)
class ComparisonLayout:
    """The paths of one compare directory."""

    root: Path

    def models_dir(self, config: PipelineConfig) -> Path:
        return self.root / "models" / stage_config_hash(config, "train")

    def images_dir(self, images_key: str) -> Path:
        return self.root / images_key

    def manifest_path(self, images_key: str) -> Path:
        return self.images_dir(images_key) / "manifest.parquet"

    def view(
        self,
        images_key: str,
        config: PipelineConfig,
        classifier: Path,
        heads: FrozenHeads | None = None,
    ) -> ComparisonWorkspace:
        parts = (
            self.images_dir(images_key) / f"shards-{config.shard_size}",
            config,
            self.manifest_path(images_key),
            classifier,
            self.models_dir(config),
        )
        if heads is None:
            return ComparisonWorkspace(*parts)
        return FrozenHeadsView(*parts, heads=heads)


@dataclass(frozen=True)
class ShardCost:
    """What computing a shard's stage cost when it was computed (a cached shard keeps it)."""

    seconds: float
    images: int  # the images computed in those seconds


def _cost_path(view: Workspace, stage: str, shard_index: int) -> Path:
    return view.shard_path(stage, shard_index).with_suffix(".cost.json")


def save_cost(view: Workspace, stage: str, shard_index: int, cost: ShardCost) -> None:
    """Record the cost next to the shard, with the lineage of the shard it belongs to."""
    lineage = read_lineage(view.shard_path(stage, shard_index))
    if lineage is None:
        return
    text = json.dumps({**asdict(cost), "lineage": lineage.as_dict()}, sort_keys=True)
    write_text_atomic(_cost_path(view, stage, shard_index), text)


def saved_cost(view: Workspace, stage: str, shard_index: int) -> ShardCost | None:
    """The recorded cost while the shard keeps the lineage it was recorded with, else None."""
    lineage = read_lineage(view.shard_path(stage, shard_index))
    try:
        saved = json.loads(_cost_path(view, stage, shard_index).read_text())
    except (OSError, ValueError):
        return None
    if lineage is None or saved.get("lineage") != lineage.as_dict():
        return None
    return ShardCost(float(saved["seconds"]), int(saved["images"]))
