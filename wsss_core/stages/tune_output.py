"""What `wsss tune` writes: a partial config of the tuned keys, or the workspace's config."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from wsss_core.config import PipelineConfig
from wsss_core.stages.tune import TuneResult
from wsss_core.store.atomic import write_text_atomic
from wsss_core.store.lock import workspace_lock
from wsss_core.store.workspace import Workspace
from wsss_core.store.workspace_config import load_workspace_config, save_workspace_config
from wsss_core.tuning.space import with_changes

TUNED_SOURCE = "tuned"
DECLINED_MARK = "Not recommended:"  # heads a tuned file whose keys are commented out
FOUND_MARK = "# The settings found, commented out (uncomment them to use them anyway):"


def provenance(result: TuneResult) -> list[str]:
    """The comment lines that say where the tuned values come from."""
    report = result.held_out
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Tuned by `wsss tune` on {stamp} from {result.sources} true masks: "
        f"{len(result.split.tuning)} to tune, {len(result.split.held_out)} held out.",
        f"Held-out final mIoU: before {report.default.describe()}, "
        f"tuned {report.tuned.describe()}; gain {report.gain.miou:+.3f} "
        f"[{report.gain.low:+.3f}, {report.gain.high:+.3f}].",
    ]
    if not result.search.finished:
        lines.append("The time budget ran out before every setting was searched.")
    return lines


def nested(changes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"crf.bilateral_srgb": 7}`` -> ``{"crf": {"bilateral_srgb": 7}}``."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        section, field = key.split(".")
        sections.setdefault(section, {})[field] = list(value) if isinstance(value, tuple) else value
    return sections


def write_tuned_file(result: TuneResult, path: Path) -> Path:
    """The tuned keys alone, for ``wsss run --config`` (layered over the saved config).

    Keys that lost on the held-out images are written commented out, so the
    file recommends what the evidence supports and still shows what was found.
    """
    changes = result.search.changes
    header = "".join(f"# {line}\n" for line in provenance(result))
    body = yaml.safe_dump(nested(changes), sort_keys=True) if changes else "{}\n"
    objection = held_out_objection(result)
    if not changes:
        header += "# No setting beat the current ones: nothing to change.\n"
    elif objection:
        header += f"# {DECLINED_MARK} {objection}.\n{FOUND_MARK}\n"
        body = "".join(f"# {line}\n" for line in body.splitlines())
    write_text_atomic(path, header + body)
    return path


def found_settings(tuned_text: str) -> str | None:
    """The settings a declined tuned file holds commented out, as YAML; None if not declined."""
    if FOUND_MARK not in tuned_text:
        return None
    lines = tuned_text.split(FOUND_MARK + "\n", 1)[1].splitlines()
    return "".join(line.removeprefix("# ") + "\n" for line in lines)


def held_out_objection(result: TuneResult) -> str | None:
    """Why the tuned settings should not replace the current ones, or None.

    They lost on the held-out images: the gain the search saw does not carry
    over, so applying them would be a guess against the evidence.
    """
    gain = result.held_out.gain
    if result.search.changes and gain.miou < 0:
        return (
            f"the tuned settings lost {gain.miou:+.3f} mIoU on the {gain.images} held-out "
            "image(s); the current ones stay"
        )
    return None


def apply_to_workspace(workspace: Workspace, result: TuneResult) -> PipelineConfig:
    """Write the tuned keys into ``WS/config.yaml``; every other setting stays as saved."""
    with workspace_lock(workspace, "tune --apply"):
        saved = load_workspace_config(workspace, None)
        changes = result.search.changes
        tuned = with_changes(saved, changes)
        if tuned is None:  # tuned values were valid when searched; the saved file changed
            raise ValueError(f"{workspace.config_path}: the tuned settings no longer apply to it")
        save_workspace_config(
            workspace,
            tuned,
            "wsss tune --apply",
            provenance(result),
            {key: TUNED_SOURCE for key in changes},
        )
    return tuned
