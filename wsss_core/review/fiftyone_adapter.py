"""The only module that talks to FiftyOne: publish a workspace for review.

FiftyOne reads its database settings when it is first imported, so
:func:`configure_database` must run before anything imports ``fiftyone``; every
function here imports it lazily for that reason.

Sample fields: ``image_id``, ``split``, ``labels`` (Classifications, the
image-level labels), ``ground_truth``, ``pseudo_mask``, ``corrected_mask`` (a
reviewer's correction from `wsss review fix`, and ``corrected_on_older_mask``:
a run has changed the pipeline's mask since), ``seeds_mask`` and
``grown_mask`` (Segmentation with ``mask_path``, so masks stay on disk),
``cam_heatmap``, the triage scores and the curation flags of
:mod:`wsss_core.review.review_files`. Re-publishing updates these fields in
place and never touches sample tags or any other field a reviewer set.

An external database (``review.database_uri``) is pinged with pymongo before
FiftyOne is imported: an unreachable one is a one-line
:class:`ReviewDatabaseError` after ``serverSelectionTimeoutMS`` (from the URI,
else 3 s), raised before anything in the workspace is written.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss_core.config import ReviewConfig
from wsss_core.data.images import voc_palette
from wsss_core.data.manifest import read_manifest
from wsss_core.review.corrections import (
    CurrentCorrection,
    current_corrections,
    made_on_older_mask,
    refresh_corrected_copies,
)
from wsss_core.review.fiftyone_database import serve_database_dir
from wsss_core.review.review_files import (
    FLAGS,
    MASK_RECOVERED,
    ReviewFiles,
    write_review_files,
)
from wsss_core.review.reviews import (
    APPROVED,
    NEEDS_FIX,
    REJECTED,
    REVIEW_TAGS,
    ObservedReview,
    approved_mask_path,
    latest_reviews,
    publish_mask_copy,
)
from wsss_core.store.workspace import Workspace


@dataclass(frozen=True)
class PublishSummary:
    dataset_name: str
    added: int
    updated: int
    database_dir: str | None


def dataset_name_for(workspace: Workspace, config: ReviewConfig) -> str:
    return config.dataset_name or f"wsss-{workspace.root.name}"


DATABASE_CHECK_TIMEOUT_MS = 3000  # when the URI sets no serverSelectionTimeoutMS


class ReviewDatabaseError(ConnectionError):
    """The review database cannot be reached; nothing was written."""


def configure_database(workspace: Workspace, config: ReviewConfig) -> str | None:
    """Point FiftyOne at the workspace's database (or the configured one) before import.

    An external database is checked first (:func:`check_database`), so a
    database that is down fails in seconds, before FiftyOne is imported. A
    database folder gets the mongod serving that folder, started if none runs
    (:mod:`wsss_core.review.fiftyone_database`): FiftyOne alone would join any
    running mongod, whatever its folder.
    """
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    if config.database_uri:
        check_database(config.database_uri)
        _check_uri_not_reconfigured(config.database_uri)
        os.environ["FIFTYONE_DATABASE_URI"] = config.database_uri
        return None
    database_dir = Path(config.database_dir or workspace.fiftyone_db_dir).expanduser().resolve()
    database_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FIFTYONE_DATABASE_DIR"] = str(database_dir)
    _check_not_reconfigured(str(database_dir))
    serve_database_dir(database_dir)  # its own mongod, not another workspace's
    return str(database_dir)


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages)."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", uri)


def _uri_timeout_ms(uri: str) -> int | None:
    match = re.search(r"[?&]serverSelectionTimeoutMS=(\d+)", uri, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def check_database(uri: str) -> None:
    """Ping the MongoDB at ``uri``; raise :class:`ReviewDatabaseError` (one line) if it fails.

    Waits at most the URI's ``serverSelectionTimeoutMS``, else
    :data:`DATABASE_CHECK_TIMEOUT_MS` (pymongo alone would wait 30 s). Checked
    on every call (a few ms when the database is up), so a long-lived process
    notices a database that went down since.
    """
    import pymongo
    from pymongo.errors import PyMongoError

    timeout = _uri_timeout_ms(uri) or DATABASE_CHECK_TIMEOUT_MS
    client = None
    try:
        client = pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout,
            connectTimeoutMS=timeout,
            appname="wsss-check",
        )
        client.admin.command("ping")
    except PyMongoError as error:
        reason = str(error).split(", Timeout:")[0]
        reason = " ".join(re.sub(r"\s*\(configured timeouts:[^)]*\)", "", reason).split())
        raise ReviewDatabaseError(
            f"review database {redact_uri(uri)} is unreachable "
            f"({type(error).__name__}: {reason[:200]}); the workspace was left unchanged"
        ) from None
    finally:
        if client is not None:
            client.close()


def _check_uri_not_reconfigured(uri: str) -> None:
    if "fiftyone" not in sys.modules:
        return
    import fiftyone as fo

    current = fo.config.database_uri
    if current != uri:
        raise RuntimeError(
            f"FiftyOne is already using the database {redact_uri(str(current))}; one process "
            f"can use one database (wanted {redact_uri(uri)})"
        )


def _check_not_reconfigured(database_dir: str) -> None:
    if "fiftyone" not in sys.modules:
        return
    import fiftyone as fo

    current = fo.config.database_dir
    if current and Path(current).resolve() != Path(database_dir):
        raise RuntimeError(
            f"FiftyOne is already using the database in {current}; one process can use "
            f"one database (wanted {database_dir})"
        )


def _mask_colors(num_labels: int) -> list[dict[str, Any]]:
    palette = voc_palette()
    colors = []
    for value in [*range(1, num_labels), 255]:
        red, green, blue = palette[value * 3 : value * 3 + 3]
        colors.append({"intTarget": value, "color": f"#{red:02x}{green:02x}{blue:02x}"})
    return colors


def _label_names(record, class_names: Sequence[str]) -> list[str]:
    return [class_names[i] for i in record.labels]


def _classifications(fo: Any, names: Sequence[str]) -> Any:
    return fo.Classifications(classifications=[fo.Classification(label=n) for n in names])


def _segmentation(fo: Any, path: Path | str | None) -> Any:
    return fo.Segmentation(mask_path=str(path)) if path and Path(path).exists() else None


def _pipeline_fields(fo: Any, record, mask: Path, files: ReviewFiles | None) -> dict[str, Any]:
    """Fields the pipeline owns and rewrites on every publish."""
    heatmap = files.cam_heatmap if files else None
    walked = files.affinity_heatmap if files else None
    return {
        "ground_truth": _segmentation(fo, record.gt_uri),
        "pseudo_mask": _segmentation(fo, mask),
        "seeds_mask": _segmentation(fo, files.seeds_mask if files else None),
        "grown_mask": _segmentation(fo, files.grown_mask if files else None),
        "cam_heatmap": fo.Heatmap(map_path=str(heatmap), range=[0, 255]) if heatmap else None,
        "affinity_heatmap": (
            fo.Heatmap(map_path=str(walked), range=[0, 255]) if walked and walked.exists() else None
        ),
        "crf_confidence": files.crf_confidence if files else None,
        "grown_crf_agreement": files.grown_crf_agreement if files else None,
        "unknown_share": files.unknown_share if files else None,
        "duplicate_of": files.duplicate_of if files else None,
        "label_suspects": list(files.label_suspects) if files else [],
        "missing_label_candidates": list(files.missing_label_candidates) if files else [],
        "flags": list(files.flags) if files else [],
    }


STRING_LISTS = ("label_suspects", "missing_label_candidates", "flags")


def _correction_fields(
    fo: Any, workspace: Workspace, image_id: str, corrections: dict[str, CurrentCorrection]
) -> dict[str, Any]:
    """The reviewer's painted mask (its immutable version file, so no cache shows an older
    one), and whether a run has changed the pipeline's mask since it was sent."""
    current = corrections.get(image_id)
    if current is None:
        return {"corrected_mask": None, "corrected_on_older_mask": None}
    return {
        "corrected_mask": _segmentation(fo, current.path),
        "corrected_on_older_mask": made_on_older_mask(workspace, image_id, current.correction),
    }


def _ensure_schema(fo: Any, dataset: Any) -> None:
    """Declare every published field, so batch updates of all-None values have a type."""
    embedded = {
        "labels": fo.Classifications,
        "ground_truth": fo.Segmentation,
        "pseudo_mask": fo.Segmentation,
        "corrected_mask": fo.Segmentation,
        "seeds_mask": fo.Segmentation,
        "grown_mask": fo.Segmentation,
        "cam_heatmap": fo.Heatmap,
        "affinity_heatmap": fo.Heatmap,
    }
    scalars = {
        "image_id": fo.StringField,
        "split": fo.StringField,
        "duplicate_of": fo.StringField,
        "crf_confidence": fo.FloatField,
        "grown_crf_agreement": fo.FloatField,
        "unknown_share": fo.FloatField,
        "corrected_on_older_mask": fo.BooleanField,
    }
    schema = dataset.get_field_schema()
    for name, document in embedded.items():
        if name not in schema:
            dataset.add_sample_field(name, fo.EmbeddedDocumentField, embedded_doc_type=document)
    for name, field in scalars.items():
        if name not in schema:
            dataset.add_sample_field(name, field)
    for name in ("published_labels", *STRING_LISTS):
        if name not in schema:
            dataset.add_sample_field(name, fo.ListField, subfield=fo.StringField)


def publish(
    workspace: Workspace,
    config: ReviewConfig,
    shard_size: int = 256,
    with_affinity: bool = False,
) -> PublishSummary:
    """Create or update the workspace's FiftyOne dataset from its manifest and maps.

    Reviewer-owned state is never overwritten: tags are not touched, an approved
    mask stays the frozen copy, and ``labels`` a reviewer edited (they differ
    from ``published_labels``, what we last wrote) are kept until synced.
    """
    database_dir = configure_database(workspace, config)
    import fiftyone as fo

    manifest = read_manifest(workspace)
    name = dataset_name_for(workspace, config)
    is_new = not fo.dataset_exists(name)
    dataset = fo.Dataset(name) if is_new else fo.load_dataset(name)
    dataset.persistent = True
    targets = {0: "background", **{i + 1: n for i, n in enumerate(manifest.class_names)}}
    dataset.default_mask_targets = {**targets, 255: "ignore"}
    reviewed = write_review_files(
        workspace, manifest, shard_size, config, with_affinity=with_affinity
    )
    files = {f.image_id: f for f in reviewed}
    approved = {i for i, e in latest_reviews(workspace).items() if e.status == APPROVED}
    corrections = current_corrections(workspace)
    refresh_corrected_copies(workspace, corrections)  # stale after a pull killed mid-way

    _ensure_schema(fo, dataset)
    existing: dict[str, tuple[str, list[str], list[str] | None]] = {}
    if len(dataset):
        ids, sample_ids, shown, published = dataset.values(
            ["image_id", "id", "labels.classifications.label", "published_labels"]
        )
        existing = {
            i: (sid, sorted(s or []), p)
            for i, sid, s, p in zip(ids, sample_ids, shown, published, strict=True)
        }
    new_samples, updates = [], {}
    for record in manifest.records:
        frozen = approved_mask_path(workspace, record.image_id)
        if record.image_id in approved and frozen.exists():
            mask = frozen  # approved: later runs never replace what a person accepted
        else:
            # Reviewers see a published copy, so an approval freezes what they saw even
            # when a later run rewrites masks/<id>.png before the next sync.
            mask = publish_mask_copy(workspace, record.image_id)
        fields = {
            **_pipeline_fields(fo, record, mask, files.get(record.image_id)),
            **_correction_fields(fo, workspace, record.image_id, corrections),
        }
        names = _label_names(record, manifest.class_names)
        if record.image_id in existing:
            sample_id, shown, published = existing[record.image_id]
            # Edited by a person: differs from what we last wrote and from the manifest
            # (equal to the manifest means the edit was synced, or undone).
            edited = published is not None and shown != sorted(published) and shown != sorted(names)
            if not edited:
                fields["labels"] = _classifications(fo, names)
                fields["published_labels"] = names
            updates[sample_id] = fields
            continue
        sample = fo.Sample(filepath=record.uri, image_id=record.image_id, split=record.split)
        for key, value in fields.items():
            sample[key] = value
        sample["labels"] = _classifications(fo, names)
        sample["published_labels"] = names
        new_samples.append(sample)
    if new_samples:
        dataset.add_samples(new_samples, progress=False)
    _keep_labels_edited_meanwhile(dataset, updates, existing)
    for field in sorted({key for values in updates.values() for key in values}):
        values = {sid: v[field] for sid, v in updates.items() if field in v}
        dataset.set_values(field, values, key_field="id")
    if is_new:  # afterwards the App settings belong to the reviewers
        _configure_app(fo, dataset, len(targets))
    _save_review_views(dataset)
    return PublishSummary(name, len(new_samples), len(updates), database_dir)


def _keep_labels_edited_meanwhile(
    dataset: Any,
    updates: dict[str, dict[str, Any]],
    existing: dict[str, tuple[str, list[str], list[str] | None]],
) -> None:
    """Drop label writes for samples a reviewer edited since ``existing`` was read.

    Building the updates takes seconds; re-reading the labels just before the
    write narrows the window in which a reviewer's edit could be overwritten
    to the few milliseconds of the write itself.
    """
    if not any("labels" in fields for fields in updates.values()):
        return
    read_before = {sample_id: shown for sample_id, shown, _ in existing.values()}
    sample_ids, shown_now = dataset.values(["id", "labels.classifications.label"])
    for sample_id, shown in zip(sample_ids, shown_now, strict=True):
        fields = updates.get(sample_id)
        if fields and "labels" in fields and sorted(shown or []) != read_before.get(sample_id):
            del fields["labels"], fields["published_labels"]


def _configure_app(fo: Any, dataset: Any, num_labels: int) -> None:
    """Masks visible by default, coloured with the VOC palette the PNGs use."""
    dataset.app_config.active_fields = fo.DatasetAppConfig.default_active_fields(dataset)
    dataset.app_config.active_fields.paths = [
        "labels",
        "ground_truth",
        "pseudo_mask",
        "corrected_mask",
    ]
    # Heatmaps: CAM in [0, 255] drawn with a perceptual colour scale.
    dataset.app_config.active_fields.exclude = False
    dataset.app_config.color_scheme = fo.ColorScheme(
        color_by="value", opacity=0.6, default_mask_targets_colors=_mask_colors(num_labels)
    )
    dataset.save()


def _save_review_views(dataset: Any) -> None:
    """The views reviewers work from; re-saved on each publish so they track new fields."""
    from fiftyone import ViewField

    unreviewed = dataset.match_tags([APPROVED, REJECTED], bool=False)
    recovered_first = [(ViewField("flags").contains(MASK_RECOVERED), -1), ("crf_confidence", 1)]
    views = {
        "review-queue": (
            unreviewed.sort_by(recovered_first),
            "not yet approved or rejected: masks with a recovered class first, then the "
            "least confident",
        ),
        "approved": (dataset.match_tags(APPROVED), "masks a reviewer approved (frozen)"),
        "rejected": (dataset.match_tags(REJECTED), "never exported"),
        "needs-fix": (dataset.match_tags(NEEDS_FIX), "re-queued for the next run"),
        "label-suspects": (
            dataset.match(ViewField("flags").length() > 0).sort_by("crf_confidence"),
            f"curation flags ({', '.join(FLAGS)}): check the labels, or the mask",
        ),
    }
    for name, (view, description) in views.items():
        if not dataset.has_saved_view(name):  # never replace a view a reviewer edited
            dataset.save_view(name, view, description=description)


def published_samples(workspace: Workspace, config: ReviewConfig) -> list[dict[str, Any]]:
    """image_id, tags and mask paths of every published sample (for checks and tests)."""
    configure_database(workspace, config)
    import fiftyone as fo

    dataset = fo.load_dataset(dataset_name_for(workspace, config))
    ids, tags, masks, truths = dataset.values(
        ["image_id", "tags", "pseudo_mask.mask_path", "ground_truth.mask_path"]
    )
    return [
        {"image_id": i, "tags": t, "pseudo_mask": m, "ground_truth": g}
        for i, t, m, g in zip(ids, tags, masks, truths, strict=True)
    ]


def app_command(workspace: Workspace) -> str:
    return f"wsss review --workspace {workspace.root}"


def _check_port_free(address: str, port: int) -> None:
    """FiftyOne would silently join an App already on the port, and show its database."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as error:
            raise OSError(
                f"port {port} on {address} is in use ({error.strerror}), maybe by another "
                "workspace's App: set review.port (wsss review --port)"
            ) from None


def start_app(workspace: Workspace, config: ReviewConfig, address: str = "127.0.0.1") -> Any:
    """Serve the App for the workspace's dataset in the background; returns the session."""
    _check_port_free(address, config.port)
    configure_database(workspace, config)
    import fiftyone as fo

    name = dataset_name_for(workspace, config)
    if not fo.dataset_exists(name):
        raise FileNotFoundError(f"no FiftyOne dataset {name!r}; run the pipeline first")
    return fo.launch_app(fo.load_dataset(name), remote=True, address=address, port=config.port)


def app_url(workspace: Workspace, config: ReviewConfig, address: str = "127.0.0.1") -> str:
    return f"http://{address}:{config.port}/datasets/{dataset_name_for(workspace, config)}"


def launch_app(workspace: Workspace, config: ReviewConfig, address: str = "127.0.0.1") -> None:
    """Serve the App until Ctrl-C."""
    session = start_app(workspace, config, address)
    print(f"FiftyOne App: {app_url(workspace, config, address)}  (Ctrl-C stops it)", flush=True)
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()


def observed_reviews(workspace: Workspace, config: ReviewConfig) -> dict[str, ObservedReview]:
    """Review tags and current image labels of every published sample.

    Label names that are not in the workspace's class list are reported, not
    guessed: adding a class is a config change, not a review.
    """
    configure_database(workspace, config)
    import fiftyone as fo

    name = dataset_name_for(workspace, config)
    if not fo.dataset_exists(name):
        raise FileNotFoundError(f"no FiftyOne dataset {name!r}; run the pipeline first")
    class_index = {n: i for i, n in enumerate(read_manifest(workspace).class_names)}
    dataset = fo.load_dataset(name)
    has_published = "published_labels" in dataset.get_field_schema()
    fields = ["image_id", "tags", "labels.classifications.label"]
    ids, tags, labels = dataset.values(fields)
    published = dataset.values("published_labels") if has_published else [None] * len(ids)
    observed: dict[str, ObservedReview] = {}
    for image_id, sample_tags, names, last in zip(ids, tags, labels, published, strict=True):
        unknown = sorted({n for n in names or () if n not in class_index})
        if unknown:
            raise ValueError(
                f"sample {image_id}: label(s) {unknown} are not workspace classes "
                f"({', '.join(class_index)})"
            )
        observed[image_id] = ObservedReview(
            frozenset(t for t in sample_tags or () if t in REVIEW_TAGS),
            tuple(sorted({class_index[n] for n in names or ()})),
            None
            if last is None
            else tuple(sorted(class_index[n] for n in last if n in class_index)),
        )
    return observed


def view_image_ids(workspace: Workspace, config: ReviewConfig, view: str) -> list[str]:
    """The image ids in one of the dataset's saved views, in the view's order."""
    configure_database(workspace, config)
    import fiftyone as fo

    name = dataset_name_for(workspace, config)
    if not fo.dataset_exists(name):
        raise FileNotFoundError(f"no FiftyOne dataset {name!r}; run the pipeline first")
    dataset = fo.load_dataset(name)
    if not dataset.has_saved_view(view):
        saved = ", ".join(dataset.list_saved_views())
        raise KeyError(f"no saved view {view!r} in {name} (saved: {saved})")
    return list(dataset.load_saved_view(view).values("image_id"))


def show_corrections(workspace: Workspace, config: ReviewConfig) -> int:
    """Point each sample's ``corrected_mask`` at its recorded correction; returns how many.

    Called after a pull, so reviewers see corrections before the next publish.
    """
    configure_database(workspace, config)
    import fiftyone as fo

    name = dataset_name_for(workspace, config)
    if not fo.dataset_exists(name):
        return 0
    dataset = fo.load_dataset(name)
    _ensure_schema(fo, dataset)
    corrections = current_corrections(workspace)
    ids, sample_ids = dataset.values(["image_id", "id"])
    fields = {
        sample_id: _correction_fields(fo, workspace, image_id, corrections)
        for image_id, sample_id in zip(ids, sample_ids, strict=True)
    }
    for field in ("corrected_mask", "corrected_on_older_mask"):
        values = {sample_id: shown[field] for sample_id, shown in fields.items()}
        dataset.set_values(field, values, key_field="id")
    return sum(image_id in corrections for image_id in ids)


def dataset_exists(workspace: Workspace, config: ReviewConfig) -> bool:
    configure_database(workspace, config)
    import fiftyone as fo

    return fo.dataset_exists(dataset_name_for(workspace, config))
