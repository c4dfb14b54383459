"""Which classifier a compared config's maps come from.

The workspace's own ``models/classifier.pt`` when a pipeline run with that
config would keep it (finished, same train config and classes: the
``keep_current`` rule of :func:`~wsss_core.model.reuse.can_reuse`), so a
compare of the workspace's own config reproduces its maps. Otherwise a
classifier trained for that train section on the workspace's training images
under the compare directory's ``models/<train hash>/`` (trained the first
time, reused or resumed afterwards by :func:`~wsss_core.model.reuse.train_or_reuse`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wsss_core.config import PipelineConfig
from wsss_core.data.manifest import read_manifest
from wsss_core.model.checkpoint import load_checkpoint
from wsss_core.model.reuse import can_reuse, train_or_reuse, training_lineage
from wsss_core.store.comparison import TrainingWorkspace
from wsss_core.store.workspace import Workspace


def workspace_classifier_fits(workspace: Workspace, config: PipelineConfig) -> bool:
    """True when a pipeline run with ``config`` would keep the workspace's classifier."""
    path = workspace.model_path
    if not path.exists():
        return False
    manifest = read_manifest(workspace)
    checkpoint = load_checkpoint(path)
    lineage = training_lineage(config, manifest)
    return can_reuse(checkpoint, lineage, manifest.class_names, keep_current=True)


def comparison_classifier(
    workspace: Workspace,
    config: PipelineConfig,
    models_dir: Path,
    log: Callable[[str], None],
    show_progress: bool = False,
) -> Path:
    """The checkpoint for ``config``'s maps; trains into ``models_dir`` when it must."""
    if workspace_classifier_fits(workspace, config):
        return workspace.model_path
    trainer = TrainingWorkspace(models_dir, workspace.manifest_path)
    train_or_reuse(trainer, config, log=log, show_progress=show_progress, keep_current=True)
    return trainer.model_path
