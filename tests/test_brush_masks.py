"""Label Studio's brush masks and label maps as regions, without a server."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from wsss_core.review.brush_rle import (
    STROKE_ALPHA_MIN,
    BrushDecodeError,
    decode_mask,
    decode_values,
    encode_mask,
)
from wsss_core.review.labelstudio_regions import (
    IGNORE_LABEL,
    IGNORE_VALUE,
    RegionError,
    label_map_of,
    labeling_config,
    regions_of,
)

CLASSES = ("cat", "dog", "person")


def _bits_to_bytes(bits: str) -> list[int]:
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


def _raw_stream(values: list[int]) -> list[int]:
    """A stream of one literal block (flag 0), as the editor writes unrepeated words."""
    header = format(len(values), "032b") + format(7, "05b")  # 8-bit words
    header += "".join(format(width - 1, "04b") for width in (3, 4, 8, 16))
    block = "0" + format(3, "02b") + format(len(values) - 1, "016b")
    return _bits_to_bytes(header + block + "".join(format(v, "08b") for v in values))


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (300, 260)])  # 300 x 260 x 4 > one 16-bit run
def test_a_mask_round_trips(shape):
    rng = np.random.default_rng(0)
    for mask in (
        np.zeros(shape, bool),
        np.ones(shape, bool),
        rng.random(shape) < 0.3,
        np.pad(np.ones((1, 1), bool), [(0, shape[0] - 1), (0, shape[1] - 1)]),
    ):
        assert np.array_equal(decode_mask(encode_mask(mask), *shape), mask)


def test_masks_we_send_are_opaque_white_or_clear():
    values = decode_values(encode_mask(np.array([[True, False]])))
    assert values.tolist() == [255, 255, 255, 255, 0, 0, 0, 0]


def test_a_pixel_counts_from_half_opaque():
    # Anti-aliased stroke edge: alpha 127 is outside, 128 (and more) inside.
    alphas = [0, STROKE_ALPHA_MIN - 1, STROKE_ALPHA_MIN, 255]
    stream = _raw_stream([v for alpha in alphas for v in (10, 20, 30, alpha)])
    assert decode_mask(stream, 1, 4).tolist() == [[False, False, True, True]]


def test_a_truncated_stream_is_refused():
    stream = encode_mask(np.eye(6, dtype=bool))
    with pytest.raises(BrushDecodeError, match="ends in the middle"):
        decode_values(stream[: len(stream) // 2])


def test_a_stream_of_another_size_is_refused():
    with pytest.raises(BrushDecodeError, match="not 4 x 4 x 4"):
        decode_mask(encode_mask(np.zeros((3, 3), bool)), 4, 4)


def test_a_block_past_the_stated_count_is_refused():
    stream = _raw_stream([0] * 8)
    stream[3] = 4  # the header now states 4 values; the block holds 8
    with pytest.raises(BrushDecodeError, match="runs past"):
        decode_values(stream)


def test_data_that_is_not_bytes_is_refused():
    with pytest.raises(BrushDecodeError, match="not a list of bytes"):
        decode_values([1, 2, "x"])


def _label_map() -> np.ndarray:
    label_map = np.zeros((6, 8), np.uint8)
    label_map[1:3, 1:4] = 1  # cat
    label_map[3:6, 4:8] = 3  # person
    label_map[0, 7] = IGNORE_VALUE
    return label_map


def test_regions_round_trip_a_label_map():
    label_map = _label_map()
    regions = regions_of(label_map, CLASSES)
    assert [r["value"]["brushlabels"] for r in regions] == [["cat"], ["person"], [IGNORE_LABEL]]
    assert np.array_equal(label_map_of(regions, CLASSES, 6, 8), label_map)


def test_where_regions_overlap_the_later_one_wins_and_unpainted_is_background():
    first = np.zeros((4, 4), bool)
    first[:, :3] = True
    second = np.zeros((4, 4), bool)
    second[:, 2:] = True
    regions = regions_of(np.where(first, 2, 0).astype(np.uint8), CLASSES)  # dog: columns 0-2
    regions += regions_of(np.where(second, IGNORE_VALUE, 0).astype(np.uint8), CLASSES)
    label_map = label_map_of(regions, CLASSES, 4, 4)
    assert label_map[0].tolist() == [2, 2, IGNORE_VALUE, IGNORE_VALUE]
    assert not label_map_of([], CLASSES, 4, 4).any()


def test_other_tools_are_not_painted():
    regions = [*regions_of(_label_map(), CLASSES), {"type": "textarea", "value": {"text": ["ok"]}}]
    assert np.array_equal(label_map_of(regions, CLASSES, 6, 8), _label_map())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["value"].update(brushlabels=["horse"]), "horse"),
        (lambda r: r["value"].update(brushlabels=["cat", "dog"]), "not one workspace class"),
        (lambda r: r.update(original_height=5), "5 x 8"),
        (lambda r: r["value"].update(format="polygon"), "polygon"),
    ],
)
def test_an_unreadable_region_names_its_problem(change, message):
    regions = regions_of(_label_map(), CLASSES)
    change(regions[0])
    with pytest.raises(RegionError, match=message):
        label_map_of(regions, CLASSES, 6, 8)


def test_a_value_outside_the_classes_is_refused():
    with pytest.raises(RegionError, match="value 9"):
        regions_of(np.full((2, 2), 9, np.uint8), CLASSES)


def test_the_labeling_config_has_one_brush_label_per_class_and_ignore():
    view = ElementTree.fromstring(labeling_config(("cat", 'a "quoted" <class>')))
    brush = view.find("BrushLabels")
    assert brush is not None and brush.get("toName") == view.find("Image").get("name")
    labels = {label.get("value"): label.get("background") for label in brush.iter("Label")}
    assert labels == {
        "cat": "#800000",  # the VOC palette, as the FiftyOne App and exported PNGs show them
        'a "quoted" <class>': "#008000",
        IGNORE_LABEL: "#e0e0c0",
    }


def test_a_class_named_like_the_ignore_label_is_refused():
    with pytest.raises(ValueError, match="ignore"):
        labeling_config(("cat", IGNORE_LABEL))
