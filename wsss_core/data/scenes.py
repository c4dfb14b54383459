"""Synthetic "scenes" dataset: textured shapes, large and small, on cluttered photo backgrounds.

The second development dataset (GUIDE §8). The digits demo (``demo.py``) puts
flat-coloured strokes on smooth gradients, which suits the dense CRF's colour
kernel and flatters every method; here a class is told by its silhouette only:

- 8 classes (``SCENE_CLASS_NAMES``): star, cross, crescent, heart, arrow,
  triangle, horse (scikit-image's silhouette) and ring (its hole is background),
  anti-aliased, rotated, stretched and mirrored at random;
- every object is filled with a random texture that any class may get (a grey
  texture or pattern through a random 2-colour map, or a photo crop), shaded
  and noisy, and kept visibly different from what it covers;
- backgrounds are random crops of the photos and textures that scikit-image
  and scikit-learn ship, with 0-4 distractor shapes of no
  class (blobs, ellipses, rectangles, irregular polygons) as clutter;
- half the canvases hold one large object (45-90 % of the side, possibly cut by
  the frame), the others 1-3 small ones (20-45 %).

Layout written under ``out_dir``, the same as the demo's (``scan_folder``)::

    images/<image_id>.png   RGB uint8, ids scene_00000 ...
    masks/<image_id>.png    L uint8: 0 background, k + 1 class k, 255 ignore
    labels.csv              image_id,labels,split   (labels joined by ";")
    classes.txt             SCENE_CLASS_NAMES, one a line

Everything is a pure function of the arguments (and of the two packages'
sample files, fixed for a release). Ground
truth follows the compositing alpha exactly as in the demo: an anti-aliased
edge is ignore, an object hidden behind others is not an image label.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from wsss_core.config import DemoConfig
from wsss_core.data.demo import (
    CANVAS_ATTEMPTS,
    CORE_ALPHA,
    EDGE_ALPHA,
    IGNORE,
    LUMA_WEIGHTS,
    SCALE_SHRINK,
    DemoDataset,
    _Digit,
    _finalise_labels,
    _free_position,
    _overlap_ok,
    _smooth_field,
    _split_assignment,
    _validate,
    with_grain,
    write_dataset,
)

SCENE_CLASS_NAMES: tuple[str, ...] = (
    "star",
    "cross",
    "crescent",
    "heart",
    "arrow",
    "triangle",
    "horse",
    "ring",
)
# The generator's defaults are the demo section's (config.DemoConfig), one definition.
SCENES_DEFAULTS = DemoConfig(kind="scenes")

# Sizes: the bounding side of an object as a fraction of the canvas side.
LARGE_OBJECT_PROBABILITY = 0.5  # share of canvases with one large object, else small ones
LARGE_SIDE_RANGE = (0.45, 0.90)  # CAMs must cover a whole large object, not one part
SMALL_SIDE_RANGE = (0.20, 0.45)  # small but still legible at 128-192 px
SMALL_COUNT_RANGE = (1, 3)  # inclusive; multi-label canvases, few enough to stay apart
MAX_FRAME_CUT = 0.20  # a large object may leave the frame by this share of its extent
MIN_OBJECT_PIXELS = 12  # bounding-side floor, keeps shapes legible on small canvases
SHRINK_STEPS = 3  # a small object that does not fit is shrunk this often, then dropped

# Clutter: distractor shapes of no class, painted behind the objects (ground truth 0).
DISTRACTOR_COUNT_RANGE = (0, 4)  # inclusive; some canvases clean, most cluttered
DISTRACTOR_SIDE_RANGE = (0.12, 0.35)  # object-sized, so size does not tell them apart
DISTRACTOR_FRAME_CUT = 0.30  # clutter is often cut by the frame
DISTRACTOR_ATTEMPTS = 10  # positions tried before a distractor is left out

# Silhouettes.
SUPERSAMPLE = 4  # polygons drawn at 4x, then box-averaged: anti-aliased alpha
# Gaussian blur (px) of every alpha: the optical softness of a real photo. Razor-cut
# edges would flatter the CRF; the soft edge also widens the ignore band to most of
# the outline (a 1 px anti-aliased edge leaves a third of it).
EDGE_BLUR_RANGE = (0.5, 1.0)
ALPHA_FLOOR = 1 / 512  # alpha below this is invisible in uint8: cropped away
CIRCLE_VERTICES = 96  # enough that a 170 px ring shows no facets
ASPECT_JITTER = 0.20  # width/height stretched by up to +-20 %
# Rotation half-range in degrees. Upright matters for these (a horse on its back,
# an upside-down heart, a vertical arrow read differently); the rest have no upright.
ROTATION_DEGREES = {"heart": 20.0, "arrow": 30.0, "horse": 15.0}
DEFAULT_ROTATION_DEGREES = 180.0
HORSE_CONTOUR_STEP = 3  # keep every 3rd contour point: ~900 vertices, finer than any canvas

# Object fill.
FILL_KINDS = ("grey", "pattern", "photo")
FILL_KIND_WEIGHTS = (0.35, 0.30, 0.35)  # share of scanned textures, patterns, photo crops
FILL_CROP_RANGE = (0.12, 0.45)  # source crop side / source short side: texture scale
COLOUR_PAIR_DISTANCE = (50.0, 150.0)  # RGB distance of the 2-colour map: visible, not loud
SHADING_RANGE = (10.0, 35.0)  # grey levels a linear shading gradient adds across the object
FILL_NOISE_STD = (2.0, 5.0)  # per-pixel noise: no fill is perfectly smooth
MIN_FILL_CONTRAST = 40.0  # grey levels (luma-like) to the covered background, see _contrast
# RGB -> (luma, chroma / 2, chroma / 2): BT.601 YCbCr with the chroma rows halved.
CONTRAST_SPACE = np.array(
    [[0.299, 0.587, 0.114], [-0.0844, -0.1656, 0.25], [0.25, -0.2093, -0.0407]]
)
CONTRAST_PERCENTILE = 25  # so at least 3/4 of the outline stands out from the background
RIM_WIDTH = 3  # px inside the edge where the contrast is measured
FILL_ATTEMPTS = 8  # fills drawn before the best is shifted away from its background
RGB_CORNERS = np.array(np.meshgrid(*[[0.0, 255.0]] * 3)).reshape(3, -1).T  # fallback targets

# Backgrounds.
BACKGROUND_CROP_RANGE = (0.30, 1.0)  # crop side / photo short side
TEXTURE_BACKGROUND_PROBABILITY = 0.2  # colourised brick/grass/gravel instead of a photo
MIN_BACKGROUND_STD = 14.0  # re-draw near-flat crops (retina's black rim, empty sky)
BACKGROUND_ATTEMPTS = 6  # then the last crop is kept: flat backgrounds may occur, rarely
# Mild colour jitter: more variety from the same ~13 sources, still photo-like.
CHANNEL_GAIN_RANGE = (0.85, 1.15)
BRIGHTNESS_SHIFT = 20.0  # +- grey levels
SATURATION_RANGE = (0.6, 1.3)
GRAIN_STD_RANGE = (1.5, 4.0)  # global sensor-like noise

# Images that ship in registry packages (files read directly: no download ever).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
GREY_TEXTURES = ("brick.png", "grass.png", "gravel.png", "camera.png")
BACKGROUND_TEXTURES = ("brick.png", "grass.png", "gravel.png")  # camera is a scene, not clutter
NO_CLASS = -1  # the class id of a distractor (never written to a mask)


@dataclass(frozen=True)
class _Part:
    """One polygon of a silhouette, in the shape's own frame (about -1..1, y down)."""

    points: np.ndarray  # float [n, 2] (x, y)
    solid: bool  # True adds to the silhouette, False cuts a hole


@dataclass(frozen=True)
class _Canvas:
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # uint8 [H, W]
    labels: tuple[int, ...]  # sorted class ids
    objects: tuple[_Digit, ...]  # placed objects (``digit`` is the class id), for statistics


# --- source images ---------------------------------------------------------------------


def _package_dir(module: str, distribution: str) -> Path:
    """Where an installed package lives, found without the (slow) import."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the scenes dataset needs {distribution} (pip install {distribution})")
    return Path(spec.submodule_search_locations[0])


def _skimage_dir() -> Path:
    return _package_dir("skimage", "scikit-image") / "data"


def _sklearn_images_dir() -> Path:
    return _package_dir("sklearn", "scikit-learn") / "datasets" / "images"


def _open(path: Path, mode: str) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sample image missing from its package")
    with Image.open(path) as image:
        return image.convert(mode)


@functools.lru_cache(maxsize=1)
def _photo_paths() -> tuple[Path, ...]:
    paths = [_skimage_dir() / name for name in SKIMAGE_PHOTOS]
    paths += [_sklearn_images_dir() / name for name in SKLEARN_PHOTOS]
    return tuple(paths)


@functools.lru_cache(maxsize=16)
def _photo(index: int) -> Image.Image:
    return _open(_photo_paths()[index], "RGB")


@functools.lru_cache(maxsize=8)
def _grey(name: str) -> Image.Image:
    return _open(_skimage_dir() / name, "L")


@functools.lru_cache(maxsize=1)
def _horse_contour() -> np.ndarray:
    """The outline of scikit-image's horse (black on white), centred, in about -1..1."""
    from skimage.measure import find_contours

    image = _open(_skimage_dir() / "horse.png", "RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    silhouette = np.asarray(Image.alpha_composite(white, image).convert("L")) < 128
    padded = np.pad(silhouette, 1).astype(np.float32)  # closed contours at the border
    outline = max(find_contours(padded, 0.5), key=len)[::HORSE_CONTOUR_STEP, ::-1]
    centre = (outline.min(axis=0) + outline.max(axis=0)) / 2
    return (outline - centre) / (np.ptp(outline, axis=0).max() / 2)


# --- silhouettes -----------------------------------------------------------------------


def _ellipse(rx: float, ry: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
    return np.stack([cx + rx * np.cos(angle), cy + ry * np.sin(angle)], axis=1)


def _star(rng: np.random.Generator) -> list[_Part]:
    inner = rng.uniform(0.38, 0.5)
    angle = -np.pi / 2 + np.arange(10) * np.pi / 5
    radius = np.where(np.arange(10) % 2 == 0, 1.0, inner)
    return [_Part(np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1), True)]


def _cross(rng: np.random.Generator) -> list[_Part]:
    a = rng.uniform(0.17, 0.26)  # arm half-width
    points = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a)]
    points += [(a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]
    return [_Part(np.array(points, float), True)]


def _crescent(rng: np.random.Generator) -> list[_Part]:
    radius, offset = rng.uniform(0.75, 0.9), rng.uniform(0.4, 0.6)
    return [_Part(_ellipse(1, 1), True), _Part(_ellipse(radius, radius, offset, 0), False)]


def _heart(rng: np.random.Generator) -> list[_Part]:
    t = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return [_Part(np.stack([x, -y], axis=1) / 16, True)]  # y down: lobes on top


def _arrow(rng: np.random.Generator) -> list[_Part]:
    shaft, head = rng.uniform(0.14, 0.22), rng.uniform(0.45, 0.6)
    neck = 1 - 2 * rng.uniform(0.3, 0.45)  # x where the head starts (length -1..1)
    points = [(-1, -shaft), (neck, -shaft), (neck, -head), (1, 0)]
    points += [(neck, head), (neck, shaft), (-1, shaft)]
    return [_Part(np.array(points, float), True)]


def _triangle(rng: np.random.Generator) -> list[_Part]:
    angle = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.25, 0.25, size=3)
    return [_Part(np.stack([np.cos(angle), np.sin(angle)], axis=1), True)]


def _horse(rng: np.random.Generator) -> list[_Part]:
    return [_Part(_horse_contour(), True)]


def _ring(rng: np.random.Generator) -> list[_Part]:
    inner = rng.uniform(0.5, 0.66)  # thick enough to keep a core at 20 % of 128 px
    return [_Part(_ellipse(1, 1), True), _Part(_ellipse(inner, inner), False)]


SHAPES: dict[str, Callable[[np.random.Generator], list[_Part]]] = {
    "star": _star,
    "cross": _cross,
    "crescent": _crescent,
    "heart": _heart,
    "arrow": _arrow,
    "triangle": _triangle,
    "horse": _horse,
    "ring": _ring,
}


def _blob(rng: np.random.Generator) -> list[_Part]:
    """A lumpy disc: harmonics 2-3 only, so it never grows star points or cross arms.

    The third is kept weak: stronger, it makes a rounded triangle.
    """
    angle = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
    radius = np.ones_like(angle)
    for harmonic, amplitude in ((2, 0.2), (3, 0.07)):
        phase = rng.uniform(0, 2 * np.pi)
        radius += rng.uniform(0, amplitude) * np.cos(harmonic * angle + phase)
    return [_Part(np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1), True)]


def _oval(rng: np.random.Generator) -> list[_Part]:
    return [_Part(_ellipse(1, rng.uniform(0.35, 0.9)), True)]


def _rectangle(rng: np.random.Generator) -> list[_Part]:
    half = rng.uniform(0.25, 1.0)
    return [_Part(np.array([(-1, -half), (1, -half), (1, half), (-1, half)], float), True)]


def _polygon(rng: np.random.Generator) -> list[_Part]:
    """6-9 vertices near evenly spread: irregular, but never triangle- or star-like."""
    count = int(rng.integers(6, 10))
    angle = (np.arange(count) + rng.uniform(-0.3, 0.3, size=count)) * 2 * np.pi / count
    radius = rng.uniform(0.7, 1.0, size=count)
    return [_Part(np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1), True)]


DISTRACTORS = (_blob, _oval, _rectangle, _polygon)


def _pose(rng: np.random.Generator, rotation_degrees: float) -> np.ndarray:
    """A random 2x2 map: aspect jitter, then a mirror, then a rotation."""
    stretch = rng.uniform(1 - ASPECT_JITTER, 1 + ASPECT_JITTER)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    theta = np.deg2rad(rng.uniform(-rotation_degrees, rotation_degrees))
    cos, sin = np.cos(theta), np.sin(theta)
    rotation = np.array([[cos, -sin], [sin, cos]])
    return rotation @ np.diag([mirror * stretch, 1.0])


def _rasterise(parts: list[_Part], pose: np.ndarray, side: float, blur: float) -> np.ndarray:
    """Soft alpha [h, w] float32 of the posed parts, bounding side ``side`` pixels.

    Drawn at SUPERSAMPLE x and box-averaged (anti-aliasing), then blurred by
    ``blur`` px; cropped to where it is visible.
    """
    posed = [part.points @ pose.T for part in parts]
    solid = np.concatenate([p for p, part in zip(posed, parts, strict=True) if part.solid])
    low, extent = solid.min(axis=0), np.ptp(solid, axis=0)
    scale = side / extent.max()
    margin = int(np.ceil(3 * blur)) + 1  # room for the blur's tails
    width, height = (np.ceil(extent * scale).astype(int) + 2 * margin).tolist()
    image = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(image)
    for points, part in zip(posed, parts, strict=True):
        pixels = ((points - low) * scale + margin) * SUPERSAMPLE
        draw.polygon(pixels.ravel().tolist(), fill=255 if part.solid else 0)
    alpha = np.asarray(image.resize((width, height), Image.Resampling.BOX), np.float32) / 255
    alpha = ndimage.gaussian_filter(alpha, blur, mode="constant")
    visible = alpha >= ALPHA_FLOOR
    rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
    return alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _class_alpha(rng: np.random.Generator, class_id: int, side: float) -> np.ndarray:
    name = SCENE_CLASS_NAMES[class_id]
    pose = _pose(rng, ROTATION_DEGREES.get(name, DEFAULT_ROTATION_DEGREES))
    return _rasterise(SHAPES[name](rng), pose, side, rng.uniform(*EDGE_BLUR_RANGE))


# --- textures --------------------------------------------------------------------------


def _random_box(
    rng: np.random.Generator, size: tuple[int, int], crop_range: tuple[float, float]
) -> tuple[int, int, int, int]:
    """A random square (left, top, right, bottom) inside an image of ``size`` (w, h)."""
    width, height = size
    side = max(4, int(rng.uniform(*crop_range) * min(width, height)))
    left, top = int(rng.integers(width - side + 1)), int(rng.integers(height - side + 1))
    return left, top, left + side, top + side


def _resized_crop(
    rng: np.random.Generator, image: Image.Image, shape: tuple[int, int], crop_range
) -> np.ndarray:
    """A random square crop of ``image`` resized to ``shape`` (h, w), float32."""
    box = _random_box(rng, image.size, crop_range)
    resized = image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, np.float32)


def _stretch(grey: np.ndarray) -> np.ndarray:
    """Percentile stretch to 0..1, so every grey source uses the whole colour map."""
    low, high = np.percentile(grey, [2, 98])
    return np.clip((grey - low) / max(high - low, 1.0), 0.0, 1.0)


def _pattern(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Procedural grey pattern in 0..1: stripes, checker, dots or smooth noise."""
    height, width = shape
    kind = int(rng.integers(4))
    if kind == 3:
        noise = _smooth_field(rng, max(height, width), int(rng.integers(6, 20)), 1)
        return _stretch(noise[:height, :width, 0])
    theta, period = rng.uniform(0, np.pi), rng.uniform(4.0, 12.0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / period
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / period
    if kind == 0:
        return 0.5 + 0.5 * np.sin(2 * np.pi * u)
    if kind == 1:
        return ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    radius = rng.uniform(0.2, 0.4)
    distance = np.hypot(u - np.round(u), v - np.round(v))
    return np.clip((radius - distance) * period, 0.0, 1.0)  # ~1 px soft dot edge


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB colours whose distance lies in COLOUR_PAIR_DISTANCE."""
    first = rng.uniform(0, 255, size=3)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction) + 1e-9
    second = np.clip(first + rng.uniform(*COLOUR_PAIR_DISTANCE) * direction, 0, 255)
    return first, second


def _colourise(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """Grey in 0..1 [h, w] through a random 2-colour gradient: [h, w, 3]."""
    first, second = _colour_pair(rng)
    return first + grey[..., None] * (second - first)


def _shading(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A linear brightness ramp [h, w, 1] across the box, in a random direction."""
    height, width = shape
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xx / max(width, 1) - 0.5) * np.cos(theta) + (yy / max(height, 1) - 0.5) * np.sin(theta)
    return (rng.uniform(*SHADING_RANGE) * ramp)[..., None]


def _fill(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A textured RGB fill [h, w, 3] float32 (0..255, unclipped) for an object's box."""
    kind = FILL_KINDS[rng.choice(len(FILL_KINDS), p=FILL_KIND_WEIGHTS)]
    if kind == "photo":
        photo = _photo(int(rng.integers(len(_photo_paths()))))
        fill = _resized_crop(rng, photo, shape, FILL_CROP_RANGE)
    else:
        if kind == "grey":
            source = _grey(GREY_TEXTURES[rng.integers(len(GREY_TEXTURES))])
            grey = _stretch(_resized_crop(rng, source, shape, FILL_CROP_RANGE))
        else:
            grey = _pattern(rng, shape)
        fill = _colourise(rng, grey)
    noise = rng.uniform(*FILL_NOISE_STD) * rng.standard_normal((*shape, 3), dtype=np.float32)
    return (fill + _shading(rng, shape) + noise).astype(np.float32)


def _contrast(fill: np.ndarray, covered: np.ndarray, band: np.ndarray) -> float:
    """How well the outline shows: fill against the background along the object's edge.

    The CONTRAST_PERCENTILE of the distance between the fill (clipped as it will
    be written) and the background it covers, locally averaged so fine texture
    alone does not count, in luma and half-weighted chroma (outlines are seen
    mostly in lightness), over ``band``, the inner rim of the object: there the
    covered background is what the eye sees just outside the edge.
    """
    gap = ndimage.uniform_filter(np.clip(fill, 0, 255) - covered, (5, 5, 0), mode="nearest")
    distance = np.sqrt(((gap[band] @ CONTRAST_SPACE.T) ** 2).sum(axis=1))
    return float(np.percentile(distance, CONTRAST_PERCENTILE))


def _rim(core: np.ndarray) -> np.ndarray:
    """The inner rim of the core (RIM_WIDTH px), or the whole core when it is thinner."""
    inner = ndimage.binary_erosion(core, iterations=RIM_WIDTH)
    rim = core & ~inner
    return rim if rim.any() else core


def _pushed_fill(fill: np.ndarray, covered: np.ndarray, band: np.ndarray) -> np.ndarray:
    """``fill`` shifted, texture kept, the least way towards an RGB corner that clears it."""
    mean = fill[band].mean(axis=0)
    best, best_contrast = fill, -1.0
    for fraction in (0.25, 0.5, 0.75, 1.0):
        for corner in RGB_CORNERS:
            shifted = fill + fraction * (corner - mean)
            contrast = _contrast(shifted, covered, band)
            if contrast > best_contrast:
                best, best_contrast = shifted, contrast
        if best_contrast >= MIN_FILL_CONTRAST:
            break
    return best


def _contrasting_fill(
    rng: np.random.Generator, covered: np.ndarray, core: np.ndarray
) -> np.ndarray:
    """A textured fill whose outline clears MIN_FILL_CONTRAST against what it covers.

    Redrawn a few times; else the best one is shifted in colour (texture kept),
    so no object is flat and none blends in.
    """
    if not core.any():
        return _fill(rng, core.shape)
    band = _rim(core)
    best, best_contrast = None, -1.0
    for _ in range(FILL_ATTEMPTS):
        fill = _fill(rng, core.shape)
        contrast = _contrast(fill, covered, band)
        if contrast >= MIN_FILL_CONTRAST:
            return fill
        if contrast > best_contrast:
            best, best_contrast = fill, contrast
    return _pushed_fill(best, covered, band)


# --- backgrounds -----------------------------------------------------------------------


def _background_source(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random photo (or colourised texture) crop resized to [size, size, 3] float32."""
    if rng.random() < TEXTURE_BACKGROUND_PROBABILITY:
        source = _grey(BACKGROUND_TEXTURES[rng.integers(len(BACKGROUND_TEXTURES))])
        grey = _stretch(_resized_crop(rng, source, (size, size), BACKGROUND_CROP_RANGE))
        return _colourise(rng, grey).astype(np.float32)
    photo = _photo(int(rng.integers(len(_photo_paths()))))
    return _resized_crop(rng, photo, (size, size), BACKGROUND_CROP_RANGE)


def _jitter(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Mirror, per-channel gain, brightness shift and saturation change."""
    if rng.random() < 0.5:
        image = image[:, ::-1]
    luma = (image @ LUMA_WEIGHTS)[..., None]
    image = luma + rng.uniform(*SATURATION_RANGE) * (image - luma)
    gain = rng.uniform(*CHANNEL_GAIN_RANGE, size=3)
    return (image * gain + rng.uniform(-BRIGHTNESS_SHIFT, BRIGHTNESS_SHIFT)).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cluttered float canvas [size, size, 3]; near-flat crops are drawn again."""
    for _ in range(BACKGROUND_ATTEMPTS):
        image = _background_source(rng, size)
        if image.std(axis=(0, 1)).max() >= MIN_BACKGROUND_STD:
            break
    return np.ascontiguousarray(_jitter(rng, image))


# --- placement and compositing ---------------------------------------------------------


def _frame_position(
    rng: np.random.Generator, shape: tuple[int, ...], size: int, cut: float
) -> tuple[int, int]:
    """A random (top, left) that leaves at most ``cut`` of the extent outside the frame."""
    height, width = shape
    margin_h, margin_w = int(cut * height), int(cut * width)
    top = int(rng.integers(-margin_h, max(size - height + margin_h, -margin_h) + 1))
    left = int(rng.integers(-margin_w, max(size - width + margin_w, -margin_w) + 1))
    return top, left


def _inside(
    class_id: int, alpha: np.ndarray, position: tuple[int, int], size: int
) -> _Digit | None:
    """The part of ``alpha`` at ``position`` (top, left) on the canvas, as a placed object."""
    (height, width), (top, left) = alpha.shape, position
    row0, col0 = max(0, -top), max(0, -left)
    row1, col1 = min(height, size - top), min(width, size - left)
    if row1 <= row0 or col1 <= col0:
        return None
    return _Digit(class_id, alpha[row0:row1, col0:col1], top + row0, left + col0)


def _large_object(rng: np.random.Generator, size: int) -> list[_Digit]:
    class_id = int(rng.integers(len(SCENE_CLASS_NAMES)))
    side = max(rng.uniform(*LARGE_SIDE_RANGE) * size, MIN_OBJECT_PIXELS)
    alpha = _class_alpha(rng, class_id, side)
    placed = _inside(class_id, alpha, _frame_position(rng, alpha.shape, size, MAX_FRAME_CUT), size)
    return [] if placed is None else [placed]


def _small_objects(rng: np.random.Generator, size: int) -> list[_Digit]:
    """1-3 objects inside the frame; one that does not fit is shrunk, then dropped."""
    placed: list[_Digit] = []
    for _ in range(int(rng.integers(SMALL_COUNT_RANGE[0], SMALL_COUNT_RANGE[1] + 1))):
        class_id = int(rng.integers(len(SCENE_CLASS_NAMES)))
        side = rng.uniform(*SMALL_SIDE_RANGE) * size
        for _ in range(SHRINK_STEPS + 1):
            alpha = _class_alpha(rng, class_id, max(side, MIN_OBJECT_PIXELS))
            position = _free_position(rng, alpha.shape, size, [d.box for d in placed])
            if position is not None:
                placed.append(_Digit(class_id, alpha, *position))
                break
            side *= SCALE_SHRINK
    return placed


def _place_objects(rng: np.random.Generator, size: int) -> list[_Digit]:
    if rng.random() < LARGE_OBJECT_PROBABILITY:
        return _large_object(rng, size)
    return _small_objects(rng, size)


def _place_distractors(
    rng: np.random.Generator, size: int, object_boxes: list[tuple[int, int, int, int]]
) -> list[_Digit]:
    """0-4 class-less shapes that overlap the objects (and each other) little."""
    placed: list[_Digit] = []
    for _ in range(int(rng.integers(DISTRACTOR_COUNT_RANGE[0], DISTRACTOR_COUNT_RANGE[1] + 1))):
        shape = DISTRACTORS[rng.integers(len(DISTRACTORS))](rng)
        side = max(rng.uniform(*DISTRACTOR_SIDE_RANGE) * size, MIN_OBJECT_PIXELS)
        pose, blur = _pose(rng, DEFAULT_ROTATION_DEGREES), rng.uniform(*EDGE_BLUR_RANGE)
        alpha = _rasterise(shape, pose, side, blur)
        for _ in range(DISTRACTOR_ATTEMPTS):
            position = _frame_position(rng, alpha.shape, size, DISTRACTOR_FRAME_CUT)
            spot = _inside(NO_CLASS, alpha, position, size)
            boxes = object_boxes + [d.box for d in placed]
            if spot is not None and _overlap_ok(spot.box, boxes):
                placed.append(spot)
                break
    return placed


def _paint(rng: np.random.Generator, canvas: np.ndarray, item: _Digit) -> None:
    """Composite a textured fill through ``item.alpha`` onto ``canvas`` (in place)."""
    top, left, bottom, right = item.box
    window = (slice(top, bottom), slice(left, right))
    alpha = item.alpha[..., None]
    fill = _contrasting_fill(rng, canvas[window], item.alpha >= CORE_ALPHA)
    canvas[window] = canvas[window] * (1 - alpha) + fill * alpha


def _composite(
    rng: np.random.Generator, canvas: np.ndarray, placed: list[_Digit]
) -> tuple[np.ndarray, np.ndarray]:
    """Paint objects in order; (raw label map, owner map of instance index or -1).

    The ground-truth rule is the demo's (``demo._composite``): core alpha is the
    class, the anti-aliased band is ignore, a later object overwrites an earlier.
    """
    size = canvas.shape[0]
    mask = np.zeros((size, size), np.uint8)
    owner = np.full((size, size), -1, np.int16)
    for instance, item in enumerate(placed):
        _paint(rng, canvas, item)
        top, left, bottom, right = item.box
        window = (slice(top, bottom), slice(left, right))
        core = item.alpha >= CORE_ALPHA
        edge = (item.alpha >= EDGE_ALPHA) & ~core
        mask[window][edge] = IGNORE
        owner[window][edge] = -1
        mask[window][core] = item.digit + 1
        owner[window][core] = instance
    return mask, owner


def _render_scene(rng: np.random.Generator, size: int) -> _Canvas:
    for _ in range(CANVAS_ATTEMPTS):
        canvas = _background(rng, size)
        placed = _place_objects(rng, size)
        for distractor in _place_distractors(rng, size, [item.box for item in placed]):
            _paint(rng, canvas, distractor)
        mask, owner = _composite(rng, canvas, placed)
        visible = _finalise_labels(mask, owner, placed)
        if visible:
            image = with_grain(rng, canvas, GRAIN_STD_RANGE)
            return _Canvas(image, mask, tuple(sorted(visible)), tuple(placed))
    raise RuntimeError(f"could not draw a canvas with a visible object at size {size}")


# --- the dataset -----------------------------------------------------------------------


def generate_scenes_dataset(
    out_dir: Path,
    num_images: int = SCENES_DEFAULTS.num_images,
    image_size: int = SCENES_DEFAULTS.canvas_side,
    seed: int = SCENES_DEFAULTS.seed,
    val_fraction: float = 0.2,
    show_progress: bool = False,
) -> DemoDataset:
    """Write a deterministic scenes dataset under ``out_dir`` (see module docstring)."""
    settings = {"kind": "scenes", "num_images": num_images, "image_size": image_size, "seed": seed}
    # The demo's checks; its object-count arguments do not apply here.
    _validate(settings, val_fraction, min_digits=1, max_digits=1)
    splits = _split_assignment(num_images, val_fraction, seed)

    def render(index: int) -> _Canvas:
        # Stream 3: the demo uses 0 (splits), 1 (digit pools) and 2 (canvases).
        return _render_scene(np.random.default_rng([seed, 3, index]), image_size)

    return write_dataset(
        Path(out_dir), "scene", SCENE_CLASS_NAMES, splits, render, "scene images", show_progress
    )
