"""Bad input: each case quarantined with a reason naming the file, the rest still ingested."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from folder_ingest import ingest_folder
from PIL import Image

from wsss_core.data.images import load_label_map, load_rgb
from wsss_core.data.manifest import read_manifest, read_quarantine
from wsss_core.data.sources import IngestOptions
from wsss_core.store.workspace import Workspace


def _rgb(path: Path, size=(20, 10), colour=(10, 200, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _dataset(tmp_path: Path, rows: list[str], classes=("cat", "dog")) -> Path:
    """A folder source whose ``good`` image is always fine; ``rows`` add the case under test."""
    root = tmp_path / "data"
    _rgb(root / "images" / "good.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    (root / "labels.csv").write_text("image_id,labels,split\ngood,cat,train\n" + "".join(rows))
    return root


def _ingest(root: Path, tmp_path: Path, **options):
    workspace = Workspace(tmp_path / "ws")
    summary = ingest_folder(
        root / "images",
        root / "labels.csv",
        workspace,
        classes_file=root / "classes.txt",
        masks_dir=root / "masks" if (root / "masks").is_dir() else None,
        options=IngestOptions(**options),
    )
    manifest = read_manifest(workspace)
    reasons = {item.image_id: item.reason for item in read_quarantine(workspace)}
    assert "good" in manifest.by_id(), "one bad item must not stop the run"
    return summary, manifest, reasons


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares ``width x height`` (its pixel data is missing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_corrupt_image(tmp_path: Path):
    root = _dataset(tmp_path, ["broken,cat,train\n"])
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _, _, reasons = _ingest(root, tmp_path)
    assert reasons["broken"].startswith("unreadable image:")
    assert "broken.png" in reasons["broken"]


def test_truncated_image(tmp_path: Path):
    root = _dataset(tmp_path, ["cut,cat,train\n"])
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "images" / "cut.jpg", quality=90)
    data = (root / "images" / "cut.jpg").read_bytes()
    (root / "images" / "cut.jpg").write_bytes(data[: len(data) // 2])
    _, _, reasons = _ingest(root, tmp_path)
    assert reasons["cut"].startswith("unreadable image:") and "cut.jpg" in reasons["cut"]


def test_zero_byte_image(tmp_path: Path):
    root = _dataset(tmp_path, ["empty,cat,train\n"])
    (root / "images" / "empty.png").write_bytes(b"")
    _, _, reasons = _ingest(root, tmp_path)
    assert reasons["empty"].startswith("empty file:") and "empty.png" in reasons["empty"]


def test_missing_file(tmp_path: Path):
    root = _dataset(tmp_path, ["ghost,cat,train\n"])
    _, _, reasons = _ingest(root, tmp_path)
    assert reasons["ghost"].startswith("missing file:") and "'ghost'" in reasons["ghost"]
    assert "labels.csv:3" in reasons["ghost"]


def test_image_over_the_configured_pixel_limit(tmp_path: Path):
    root = _dataset(tmp_path, ["big,cat,train\n"])
    _rgb(root / "images" / "big.png", size=(300, 200))
    _, _, reasons = _ingest(root, tmp_path, max_pixels=50_000)
    assert reasons["big"].startswith("image too large:")
    assert "300x200" in reasons["big"] and "max_pixels=50000" in reasons["big"]


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow warns at 89 MP, refuses at 179 MP
def test_decompression_bomb_header(tmp_path: Path, side: int):
    root = _dataset(tmp_path, ["bomb,cat,train\n"])
    _png_header_only(root / "images" / "bomb.png", side, side)
    summary, _, reasons = _ingest(root, tmp_path)
    assert reasons["bomb"].startswith("image too large:") and "bomb.png" in reasons["bomb"]
    assert summary.quarantined == {"image too large": 1}


def test_unusual_modes_are_converted_not_rejected(tmp_path: Path):
    rows = [f"{name},dog,train\n" for name in ("cmyk", "deep", "grey", "alpha", "palette")]
    root = _dataset(tmp_path, rows)
    images = root / "images"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(images / "cmyk.jpg")
    ramp = (np.arange(200, dtype=np.uint16).reshape(10, 20) * 300).astype(np.uint16)
    Image.fromarray(ramp).save(images / "deep.png")
    Image.new("L", (20, 10), 90).save(images / "grey.png")
    Image.new("RGBA", (20, 10), (200, 0, 0, 0)).save(images / "alpha.png")
    Image.new("RGB", (20, 10), (0, 0, 250)).convert("P").save(images / "palette.png")
    summary, manifest, reasons = _ingest(root, tmp_path)
    assert reasons == {}
    assert summary.converted == {"CMYK": 1, "I;16": 1, "L": 1, "RGBA": 1, "P": 1}
    for record in manifest.records:
        rgb = load_rgb(record.uri)
        assert rgb.dtype == np.uint8 and rgb.shape == (10, 20, 3)
    by_id = manifest.by_id()
    assert load_rgb(by_id["cmyk"].uri)[0, 0, 0] > 200  # CMYK (0, 255, 255, 0) is red
    deep = load_rgb(by_id["deep"].uri)[..., 0]
    assert deep.max() == 255 and deep[0, 0] == 0  # 16-bit scaled, not clipped
    assert tuple(load_rgb(by_id["alpha"].uri)[0, 0]) == (200, 0, 0)


def _oriented_case(root: Path, gt_size: tuple[int, int]) -> None:
    """A 40x20 stored JPEG with EXIF orientation 6 (shown 20x40); bright block + mask block."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[0:6, 0:10] = 255  # top-left of the stored grid
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(stored).save(root / "images" / "turned.jpg", exif=exif, quality=95)
    mask = np.zeros(gt_size[::-1], np.uint8)
    if gt_size == (40, 20):
        mask[0:6, 0:10] = 2  # drawn on the stored grid
    (root / "masks").mkdir(exist_ok=True)
    Image.fromarray(mask).save(root / "masks" / "turned.png")


def test_exif_orientation_applies_to_image_and_ground_truth(tmp_path: Path):
    root = _dataset(tmp_path, ["turned,dog,train\n"])
    _oriented_case(root, gt_size=(40, 20))
    _, manifest, reasons = _ingest(root, tmp_path)
    record = manifest.by_id()["turned"]
    assert reasons == {}
    assert (record.width, record.height) == (20, 40)
    assert Path(record.gt_uri) == Workspace(tmp_path / "ws").ground_truth_path("turned")
    image, truth = load_rgb(record.uri), load_label_map(record.gt_uri)
    assert image.shape[:2] == truth.shape == (40, 20)
    np.testing.assert_array_equal(image[..., 0] > 128, truth == 2)


def test_ground_truth_already_oriented_is_used_as_is(tmp_path: Path):
    root = _dataset(tmp_path, ["turned,dog,train\n"])
    _oriented_case(root, gt_size=(20, 40))
    _, manifest, reasons = _ingest(root, tmp_path)
    assert reasons == {}
    assert manifest.by_id()["turned"].gt_uri == str(root / "masks" / "turned.png")


def test_unknown_class_name(tmp_path: Path):
    root = _dataset(tmp_path, ["zoo,cat;zebra,train\n"])
    _rgb(root / "images" / "zoo.png")
    _, _, reasons = _ingest(root, tmp_path)
    assert reasons["zoo"].startswith("unknown class:") and "zebra" in reasons["zoo"]
    assert "labels.csv:3" in reasons["zoo"]


def test_image_without_labels_is_kept_for_inference_and_flagged(tmp_path: Path):
    root = _dataset(tmp_path, ["bare,,train\n"])
    _rgb(root / "images" / "bare.png")
    summary, manifest, reasons = _ingest(root, tmp_path)
    bare = manifest.by_id()["bare"]
    assert reasons == {} and bare.labels == () and bare.status == "unlabeled"
    assert bare in manifest.shards(10)[0]  # the stages see it
    assert summary.unlabeled == 1
    assert any("unlabeled" in line for line in summary.lines())


def test_ground_truth_size_mismatch(tmp_path: Path):
    root = _dataset(tmp_path, ["odd,cat,train\n"])
    _rgb(root / "images" / "odd.png")
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(root / "masks" / "odd.png")
    _, _, reasons = _ingest(root, tmp_path)
    assert reasons["odd"].startswith("ground truth size mismatch:")
    assert "masks/odd.png is 7x7, image is 20x10" in reasons["odd"]


def test_ground_truth_values_outside_the_classes(tmp_path: Path):
    root = _dataset(tmp_path, ["wild,cat,train\n"])
    _rgb(root / "images" / "wild.png")
    (root / "masks").mkdir()
    Image.fromarray(np.full((10, 20), 9, np.uint8)).save(root / "masks" / "wild.png")
    _, _, reasons = _ingest(root, tmp_path)
    assert reasons["wild"].startswith("invalid ground truth:") and "[9]" in reasons["wild"]


def test_duplicate_image_ids(tmp_path: Path):
    root = _dataset(tmp_path, ["good,dog,val\n", "good.png,cat,train\n"])
    summary, manifest, _ = _ingest(root, tmp_path)
    assert manifest.by_id()["good"].labels == (0,)  # the first row wins
    reasons = [item.reason for item in read_quarantine(Workspace(tmp_path / "ws"))]
    assert [r.split(":")[0] for r in reasons] == ["duplicate id", "duplicate id"]
    assert "labels.csv:3 repeats 'good'" in reasons[0]
    assert summary.quarantined == {"duplicate id": 2}


def test_path_escaping_the_dataset_root(tmp_path: Path):
    root = _dataset(tmp_path, ["../../secret.png,cat,train\n"])
    _rgb(tmp_path / "secret.png")
    _, manifest, reasons = _ingest(root, tmp_path)
    assert "secret" not in manifest.by_id()
    assert reasons["secret"].startswith("path escapes root:") and "secret.png" in reasons["secret"]


def test_invalid_ids_cannot_name_workspace_files(tmp_path: Path):
    root = _dataset(tmp_path, ["..,cat,train\n", "tab\there,cat,train\n"])
    _, _, reasons = _ingest(root, tmp_path)
    assert {r.split(":")[0] for r in reasons.values()} == {"invalid id"}
    assert len(reasons) == 2


def test_malformed_csv_rows(tmp_path: Path):
    rows = ["extra,cat,train,surplus\n", "short\n", "\n", 'quoted,"cat\n']
    root = _dataset(tmp_path, rows)
    summary, manifest, reasons = _ingest(root, tmp_path)
    assert len(manifest) == 1
    malformed = {k: v for k, v in reasons.items() if v.startswith("malformed row:")}
    assert len(malformed) == 3
    assert any("labels.csv:3" in v and "4 fields" in v for v in malformed.values())
    assert summary.quarantined == {"malformed row": 3}


def test_malformed_jsonl_rows(tmp_path: Path):
    root = _dataset(tmp_path, [])
    _rgb(root / "images" / "b.png")
    (root / "labels.jsonl").write_text(
        '{"image_id": "good", "labels": ["cat", "dog"], "split": "val"}\n'
        "{not json\n"
        '{"image_id": 3, "labels": []}\n'
        '{"image_id": "b", "labels": 5}\n'
        '{"image_id": "b", "labels": "dog"}\n'
    )
    workspace = Workspace(tmp_path / "ws")
    summary = ingest_folder(
        root / "images", root / "labels.jsonl", workspace, classes_file=root / "classes.txt"
    )
    manifest = read_manifest(workspace)
    assert manifest.by_id()["good"].labels == (0, 1) and manifest.by_id()["good"].split == "val"
    assert manifest.by_id()["b"].labels == (1,)
    assert summary.quarantined == {"malformed row": 3}
    reasons = [item.reason for item in read_quarantine(workspace)]
    assert all("labels.jsonl:" in reason for reason in reasons)
