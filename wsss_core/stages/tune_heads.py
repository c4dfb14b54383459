"""The affinity and self-training heads `wsss tune` scores a config with: the ones a run would use.

A run learns each head from maps its own settings made (the affinity head
from the CAMs, the self-training head from the first-pass masks), on
``train_images`` images spread over the manifest, and keeps it under the
head's lineage. So for any config, :meth:`TuneHeads.frozen` gives:

- the workspace's head of that lineage, when a run trained one (what the
  next run reuses);
- else one trained here as a run trains it, on the same images (when both
  heads' ``train_images`` agree, as by default; else each picks its spread
  from the larger count's), under ``WS/tune/<training images>/``, kept across
  calls. Only the maps the heads learn from are computed for it (not the
  final masks).

A head trained on the few tuning images instead would be weaker than any
run's, and a head kept from other settings scores what no run will do: a
CAM change once looked like a small loss on the held-out images with the
defaults' heads and lost 0.12 mIoU in the run that retrained them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import read_manifest
from wsss_core.model import affinity_head, segmentation_head
from wsss_core.model.affinity_head import training_records
from wsss_core.stages.common import (
    AFFINITY_HEAD,
    SELF_TRAINING_HEAD,
    checked_model_hash,
    config_heads,
    map_stages,
)
from wsss_core.stages.compare_images import write_images_manifest
from wsss_core.stages.registry import map_stage
from wsss_core.store.comparison import ComparisonLayout, ComparisonWorkspace, FrozenHeads
from wsss_core.store.workspace import ALL_MAP_STAGES, Workspace

HeadLineage = Callable[[PipelineConfig, str], str]  # (config, classifier hash) -> lineage

# Per head title: its lineage, the config section that switches it, the stage whose
# preparation trains it (and from which on its output shapes the maps), what it
# recorded as its training time.
HEAD_LINEAGE: dict[str, HeadLineage] = {
    AFFINITY_HEAD: affinity_head.head_lineage,
    SELF_TRAINING_HEAD: segmentation_head.head_lineage,
}
HEAD_SECTION = {AFFINITY_HEAD: "affinity", SELF_TRAINING_HEAD: "self_training"}
HEAD_STAGE = {AFFINITY_HEAD: "affinity", SELF_TRAINING_HEAD: "crf"}
_RECORDED_SECONDS: dict[str, Callable[[Path], float]] = {
    AFFINITY_HEAD: lambda path: affinity_head.load_head(path).seconds,
    SELF_TRAINING_HEAD: lambda path: segmentation_head.load_segmentation_head(path).seconds,
}


def head_lineages(config: PipelineConfig, model_hash: str) -> dict[str, str]:
    """The lineage of every head ``config`` has on, by title."""
    return {title: HEAD_LINEAGE[title](config, model_hash) for title in config_heads(config)}


def acts_on(title: str, stage: str) -> bool:
    """Whether the head's output reaches ``stage``'s maps."""
    return ALL_MAP_STAGES.index(stage) >= ALL_MAP_STAGES.index(HEAD_STAGE[title])


class TuneHeads:
    """Heads for any config of a tune, as a run would have them (module docstring)."""

    def __init__(
        self,
        workspace: Workspace,
        layout: ComparisonLayout,
        classifier: Path,
        start: PipelineConfig,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.workspace, self.layout, self.classifier = workspace, layout, classifier
        self.say = log or (lambda _: None)
        self.model_hash = checked_model_hash(workspace)
        for title, path_of in config_heads(start).items():
            path = path_of(workspace, start, self.model_hash)
            if not path.exists():
                raise ValueError(
                    f"{path}: no {title} for this config and classifier; tuning scores the "
                    "settings with the heads a run trains: run `wsss run` first"
                )
        self.records = read_manifest(workspace).records  # tune holds the workspace lock
        self._keys: dict[int, str] = {}  # training image count -> images key
        self.start_paths = self._paths(start)

    def frozen(self, config: PipelineConfig) -> FrozenHeads:
        """The heads of ``config``'s lineages, training here those no run has trained."""
        paths = self._paths(config)
        if set(paths) != set(config_heads(config)):
            self._train(config, paths)
            paths = self._paths(config)
        missing = set(config_heads(config)) - set(paths)
        if missing:  # else a view would train it on the few images it scores
            raise RuntimeError(f"tune: {', '.join(sorted(missing))} not found after training")
        return FrozenHeads(paths.get(AFFINITY_HEAD), paths.get(SELF_TRAINING_HEAD))

    def training_seconds(self) -> dict[str, float]:
        """What each of the start's heads took to train in the workspace's run, by title."""
        return {title: _RECORDED_SECONDS[title](path) for title, path in self.start_paths.items()}

    def available(self, config: PipelineConfig) -> set[str]:
        """The titles of ``config``'s heads that exist, needing no training."""
        return set(self._paths(config))

    def training_images(self, config: PipelineConfig) -> int:
        """How many images ``config``'s heads learn from (the maps trained for them)."""
        return len(self._training_ids(config))

    def _paths(self, config: PipelineConfig) -> dict[str, Path]:
        """Each of ``config``'s heads that exists: the workspace's first, else tune's own."""
        found: dict[str, Path] = {}
        if not config_heads(config):
            return found
        places = (self.workspace, self._view(config))
        for title, path_of in config_heads(config).items():
            for where in places:
                path = path_of(where, config, self.model_hash)
                if path.exists():
                    found[title] = path
                    break
        return found

    def _training_ids(self, config: PipelineConfig) -> list[str]:
        # Every head picks its images with training_records, so the largest count's pick
        # holds each head's own pick of the manifest.
        count = max(
            getattr(config, HEAD_SECTION[title]).train_images for title in config_heads(config)
        )
        return [record.image_id for record in training_records(self.records, count)]

    def _view(
        self, config: PipelineConfig, known: Mapping[str, Path] | None = None
    ) -> ComparisonWorkspace:
        """The view over the heads' training images, loading the ``known`` head files."""
        ids = self._training_ids(config)
        if len(ids) not in self._keys:
            self._keys[len(ids)], _ = write_images_manifest(self.workspace, self.layout, ids)
        known = known or {}
        heads = FrozenHeads(known.get(AFFINITY_HEAD), known.get(SELF_TRAINING_HEAD))
        return self.layout.view(self._keys[len(ids)], config, self.classifier, heads)

    def _train(self, config: PipelineConfig, known: Mapping[str, Path]) -> None:
        """The missing heads, from the maps they learn from, as a run's stages make them."""
        view = self._view(config, known)
        missing = [title for title in config_heads(config) if title not in known]
        last = max(ALL_MAP_STAGES.index(HEAD_STAGE[title]) for title in missing)
        started = time.perf_counter()
        self.say(
            f"training the {' and '.join(missing)} for these settings on "
            f"{self.training_images(config)} images, as a run would"
        )
        for stage in map_stages(config):
            if ALL_MAP_STAGES.index(stage) > last:
                break
            entry = map_stage(stage)
            if entry.prepare is not None:
                entry.prepare(view, config, self.model_hash)
            if ALL_MAP_STAGES.index(stage) < last:
                for shard_index in range(len(read_manifest(view).shards(config.shard_size))):
                    entry.run(view, config, shard_index, False, self.model_hash)
        self.say(f"heads trained in {time.perf_counter() - started:.0f} s")
