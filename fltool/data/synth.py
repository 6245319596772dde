"""The embedded default dataset: deterministic synthetic shapes in COCO format.

Built so that the focal-loss problem is real yet learnable in minutes on a CPU:

- many small objects and a lot of plain background, so easy negative anchors vastly outnumber positives;
- unlabelled look-alikes (rings, hollow outlines, bars) of the same colours: hard negatives;
- imbalanced classes (``class_weights``) and a small/medium/large mix by COCO's area thresholds;
- flat shapes with crisp, un-antialiased edges; every box is the tight extent of the drawn pixels.

Labelled shapes never touch each other or a distractor (``min_gap`` pixels apart; their boxes may overlap up to
``max_iou``), so nothing labelled is occluded and a box always equals its visible pixels.

Determinism: image ``i`` of a split is drawn from ``np.random.default_rng([seed, split, i])`` alone, so the same
spec gives byte-identical files and the val images do not depend on ``num_train``. Images are PNG (lossless,
fixed compression settings). ``meta.json``'s ``content_hash`` covers the decoded pixels and the annotation files,
so it does not depend on the zlib build that compressed the PNGs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from fltool.errors import ConfigError, DataError

#: Bump when the drawing changes, so cached datasets made by an older generator are not reused.
GENERATOR_VERSION = 1

#: Labelled shape classes that can be drawn.
SHAPES = ("circle", "square", "triangle", "cross")
#: Unlabelled look-alikes (hard negatives) that can be drawn.
DISTRACTORS = ("ring", "hollow_square", "hollow_triangle", "bar", "semicircle")
#: COCO's area thresholds (area = box w*h in the image's pixels).
SMALL_MAX_AREA = 32 ** 2
MEDIUM_MAX_AREA = 96 ** 2
SIZE_NAMES = ("small", "medium", "large")
SPLITS = ("train", "val")

#: A shape's longest side is at most this fraction of the image side (room to place several).
MAX_SIDE_FRACTION = 0.6
_PLACEMENT_TRIES = 40
_IMAGE_NAME = re.compile(r"^(train|val)_\d{6}\.png$")

Progress = Callable[[int, int], None]


def size_name(area: float) -> str:
    """COCO's size bucket of a box area."""
    if area < SMALL_MAX_AREA:
        return "small"
    return "medium" if area < MEDIUM_MAX_AREA else "large"


@dataclass(frozen=True)
class SynthSpec:
    """Everything that determines the synthetic dataset. Equal specs give byte-identical datasets."""

    image_size: int = 256  # square images, in pixels
    num_train: int = 800
    num_val: int = 150
    seed: int = 0
    classes: tuple[str, ...] = ("circle", "square", "triangle", "cross")
    class_weights: tuple[float, ...] = (0.45, 0.30, 0.17, 0.08)  # relative frequency of each class
    objects_per_image: tuple[int, int] = (4, 12)  # inclusive range of labelled shapes tried per image
    distractors_per_image: tuple[int, int] = (0, 3)  # inclusive range of unlabelled look-alikes per image
    distractor_shapes: tuple[str, ...] = ("ring", "hollow_square", "hollow_triangle", "bar")
    size_mix: tuple[float, float, float] = (0.45, 0.40, 0.15)  # fractions of small / medium / large shapes
    small_side: tuple[int, int] = (14, 31)  # side length ranges in pixels (inclusive)
    medium_side: tuple[int, int] = (32, 95)
    large_side: tuple[int, int] = (96, 150)
    aspect_jitter: float = 0.15  # width/height ratio drawn log-uniformly from [1/(1+j), 1+j]
    max_iou: float = 0.3  # largest IoU allowed between any two boxes (labelled or distractor)
    min_gap: int = 2  # pixels between any two drawn shapes
    min_contrast: float = 80.0  # RGB distance between a shape's colour and the background under it
    noise_std: float = 3.0  # per-pixel Gaussian noise over the whole image

    def __post_init__(self) -> None:
        # Lists (e.g. from meta.json) become tuples, so equal specs compare and hash equal.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        def bad(what: str, hint: str) -> ConfigError:
            return ConfigError(f"synthetic dataset spec: {what}", hint)

        if self.image_size < 64:
            raise bad(f"image_size {self.image_size} is too small", "use at least 64 px")
        if self.num_train < 1 or self.num_val < 1:
            raise bad(f"num_train={self.num_train}, num_val={self.num_val}", "both splits need at least one image")
        unknown = [c for c in self.classes if c not in SHAPES]
        if not self.classes or unknown or len(set(self.classes)) != len(self.classes):
            raise bad(f"classes {self.classes} must be distinct names from {SHAPES}", "pick from the shapes listed")
        if len(self.class_weights) != len(self.classes) or min(self.class_weights) <= 0:
            raise bad(f"class_weights {self.class_weights} must be one positive weight per class",
                      f"give {len(self.classes)} positive numbers")
        unknown = [d for d in self.distractor_shapes if d not in DISTRACTORS]
        if unknown or (self.distractors_per_image[1] > 0 and not self.distractor_shapes):
            raise bad(f"distractor_shapes {self.distractor_shapes} must be names from {DISTRACTORS}",
                      "pick from the distractors listed")
        for name in ("objects_per_image", "distractors_per_image", "small_side", "medium_side", "large_side"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise bad(f"{name} {(lo, hi)} is not a range low <= high", "give two non-negative integers")
        if self.objects_per_image[1] < 1:
            raise bad("objects_per_image allows no objects", "allow at least one object per image")
        if len(self.size_mix) != 3 or min(self.size_mix) < 0 or sum(self.size_mix) <= 0:
            raise bad(f"size_mix {self.size_mix} must be three non-negative fractions", "e.g. (0.45, 0.40, 0.15)")
        max_side = self.max_side
        for name, frac, (lo, _) in zip(SIZE_NAMES, self.size_mix, self._side_ranges_raw()):
            if frac > 0 and lo > max_side:
                raise bad(f"{name} shapes ({lo} px and up) do not fit a {self.image_size} px image "
                          f"(at most {max_side} px)", f"use image_size >= {math.ceil(lo / MAX_SIDE_FRACTION)} "
                          f"or set the {name} fraction of size_mix to 0")
        if self.small_side[0] < 4:
            raise bad(f"small_side starts at {self.small_side[0]} px", "use at least 4 px")
        if not 0 < self.max_iou <= 1 or self.min_gap < 0 or self.aspect_jitter < 0 or self.noise_std < 0:
            raise bad("max_iou must be in (0, 1]; min_gap, aspect_jitter and noise_std must be >= 0",
                      "fix the value")

    def _side_ranges_raw(self) -> tuple[tuple[int, int], ...]:
        return (self.small_side, self.medium_side, self.large_side)

    @property
    def max_side(self) -> int:
        return int(self.image_size * MAX_SIDE_FRACTION)

    def side_ranges(self) -> tuple[tuple[int, int], ...]:
        """Side ranges of the small/medium/large bins, clipped to what fits the image."""
        return tuple((lo, min(hi, self.max_side)) for lo, hi in self._side_ranges_raw())

    def num_images(self, split: str) -> int:
        return self.num_train if split == "train" else self.num_val

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def short_hash(self) -> str:
        """12 hex digits naming this spec and generator version (the cache folder's name)."""
        text = json.dumps({"generator": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


#: Named specs (``fltool data synth --preset NAME``; in a config ``fltool_synth_spec = dict(preset=NAME, ...)``):
#: field values over the defaults of :class:`SynthSpec`.
SPEC_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The paper's regime: on COCO about 1 anchor in 1000 is positive. Larger canvases hold a few small objects among
    # many unlabelled look-alikes of the same sizes and colours, so nearly every anchor is background and the hard
    # negatives are real. `fltool analyze anchors retinanet_r18-gn_synth-sparse_384` measures the ratio. 384 px (not
    # 512): 2.25x the default's pixels per image instead of 4x keeps a comparison campaign within hours here.
    "sparse": dict(image_size=384, objects_per_image=(1, 3), distractors_per_image=(9, 18),
                   size_mix=(0.75, 0.25, 0.0), medium_side=(32, 48)),
}


def spec_from_args(args: dict[str, Any]) -> SynthSpec:
    """A spec from a config's ``fltool_synth_spec``: an optional ``preset`` name, then fields that override it."""
    args = dict(args)
    name = args.pop("preset", "default")
    if name not in SPEC_PRESETS:
        raise ConfigError(f"unknown synthetic dataset preset '{name}'", f"use one of {', '.join(SPEC_PRESETS)}")
    try:
        return SynthSpec(**{**SPEC_PRESETS[name], **args})
    except TypeError as exc:
        raise ConfigError(f"bad synthetic dataset spec: {exc}", "use the fields of fltool.data.synth.SynthSpec") \
            from None


@dataclass(frozen=True)
class SynthDataset:
    """A generated dataset on disk."""

    root: Path
    train_json: Path
    val_json: Path
    img_dir: Path
    spec: SynthSpec
    classes: tuple[str, ...]

    @classmethod
    def load(cls, root: Path) -> "SynthDataset":
        """The dataset generated in ``root`` (reads its ``meta.json``)."""
        root = Path(root)
        meta_file = root / "meta.json"
        try:
            meta = json.loads(meta_file.read_text())
            spec = SynthSpec(**meta["spec"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{meta_file} is missing or not an fltool synthetic dataset's meta.json ({exc})",
                            "generate the dataset again") from None
        return cls(root, root / "train.json", root / "val.json", root / "images", spec, tuple(spec.classes))

    def meta(self) -> dict[str, Any]:
        """The contents of ``meta.json``: spec, counts per class/split, size histogram, content hash."""
        return json.loads((self.root / "meta.json").read_text())


@dataclass
class RenderedImage:
    """One drawn image: pixels, labelled boxes ([x, y, w, h], tight around the drawn pixels) and distractors."""

    pixels: np.ndarray  # (H, W, 3) uint8
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # index into spec.classes
    masks: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # (x0, y0, bool mask) per box
    distractor_boxes: list[list[float]] = field(default_factory=list)
    distractor_shapes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- drawing shapes

def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates relative to the patch centre: (1, w) and (h, 1)."""
    x = np.arange(w, dtype=np.float64)[None, :] + 0.5 - w / 2
    y = np.arange(h, dtype=np.float64)[:, None] + 0.5 - h / 2
    return x, y


def _ellipse(w: int, h: int, shrink: float = 0.0) -> np.ndarray:
    x, y = _grid(w, h)
    a, b = w / 2 - shrink, h / 2 - shrink
    if a <= 0 or b <= 0:
        return np.zeros((h, w), bool)
    return (x / a) ** 2 + (y / b) ** 2 <= 1.0


def _triangle(w: int, h: int, inset: float = 0.0) -> np.ndarray:
    """Apex-up isosceles triangle filling the w x h patch; ``inset`` keeps points that far inside each edge."""
    x, y = _grid(w, h)
    y_top = y + h / 2  # 0 at the apex, h at the base
    edge_len = math.hypot(h, w / 2)
    inside_sides = ((w / 2) * y_top - np.abs(x) * h) / edge_len  # distance inside the slanted edges
    inside_base = h - y_top
    return (inside_sides >= inset) & (inside_base >= inset)


def _border(w: int, h: int) -> int:
    """Outline thickness of the hollow distractors."""
    return max(2, round(0.15 * min(w, h)))


def _shape_mask(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A (h, w) boolean mask of one shape, drawn without antialiasing."""
    if kind == "circle":
        return _ellipse(w, h)
    if kind in ("square", "bar"):  # a bar is a long, thin rectangle (see _sample_size)
        return np.ones((h, w), bool)
    if kind == "triangle":
        return _triangle(w, h)
    if kind == "cross":
        x, y = _grid(w, h)
        arm = rng.uniform(0.28, 0.40)  # arm thickness as a fraction of the side
        return (np.abs(x) <= arm * w / 2) | (np.abs(y) <= arm * h / 2)
    if kind == "ring":
        return _ellipse(w, h) & ~_ellipse(w, h, shrink=_border(w, h))
    if kind == "hollow_square":
        mask = np.ones((h, w), bool)
        b = _border(w, h)
        mask[b:h - b, b:w - b] = False
        return mask
    if kind == "hollow_triangle":
        return _triangle(w, h) & ~_triangle(w, h, inset=_border(w, h))
    if kind == "semicircle":
        mask = _ellipse(w, h)
        mask[(h + 1) // 2:] = False
        return mask
    raise ValueError(f"unknown shape {kind!r}")  # specs are validated, so this is a bug


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square dilation by ``radius`` pixels, grown by that much on every side: (h, w) -> (h+2r, w+2r)."""
    if radius == 0:
        return mask
    h, w = mask.shape
    out = np.zeros((h + 2 * radius, w + 2 * radius), bool)
    rows = np.zeros((h, w + 2 * radius), bool)
    for dx in range(2 * radius + 1):
        rows[:, dx:dx + w] |= mask
    for dy in range(2 * radius + 1):
        out[dy:dy + h] |= rows
    return out


def _iou(box: list[float], others: list[list[float]]) -> float:
    """Largest IoU between ``box`` and any of ``others`` ([x, y, w, h])."""
    if not others:
        return 0.0
    o = np.asarray(others)
    x1 = np.maximum(box[0], o[:, 0])
    y1 = np.maximum(box[1], o[:, 1])
    x2 = np.minimum(box[0] + box[2], o[:, 0] + o[:, 2])
    y2 = np.minimum(box[1] + box[3], o[:, 1] + o[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + o[:, 2] * o[:, 3] - inter
    return float((inter / union).max())


# ---------------------------------------------------------------------------------------------- colours

def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth, muted colour field: a linear gradient between two colours plus a few low-frequency waves."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    x, y = coords[None, :], coords[:, None]
    grey = rng.uniform(55, 195, size=2)
    c0 = np.clip(grey[0] + rng.uniform(-30, 30, size=3), 0, 255)
    c1 = np.clip(grey[1] + rng.uniform(-30, 30, size=3), 0, 255)
    angle = rng.uniform(0, 2 * math.pi)
    t = x * math.cos(angle) + y * math.sin(angle)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)  # (size, size) in [0, 1]
    field_ = c0 + (c1 - c0) * t[..., None]  # (size, size, 3)
    waves = np.zeros((size, size, 3))
    for _ in range(3):
        fx, fy = rng.uniform(-2.0, 2.0, size=2)  # cycles per image
        phase = rng.uniform(0, 2 * math.pi)
        amp = rng.uniform(3, 12, size=3)
        # cos(a + b) = cos a cos b - sin a sin b: two outer products instead of a cosine per pixel.
        a, b = 2 * math.pi * fx * x + phase, 2 * math.pi * fy * y  # (1, size), (size, 1)
        wave = np.cos(b) * np.cos(a) - np.sin(b) * np.sin(a)  # (size, size)
        waves += wave[..., None] * amp
    return field_ + waves


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb) * 255.0


def _shape_colour(rng: np.random.Generator, under: np.ndarray, min_contrast: float) -> np.ndarray:
    """A saturated colour at least ``min_contrast`` (RGB distance) from ``under`` (best of 20 tries if none is)."""
    best, best_dist = None, -1.0
    for _ in range(20):
        colour = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
        dist = float(np.linalg.norm(colour - under))
        if dist >= min_contrast:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


# ---------------------------------------------------------------------------------------------- one image

def _sample_size(spec: SynthSpec, rng: np.random.Generator, kind: str) -> tuple[int, int]:
    """(w, h) of a shape: a side from the size mix, jittered in aspect (bars are long and thin)."""
    mix = np.asarray(spec.size_mix, dtype=np.float64)
    lo, hi = spec.side_ranges()[int(rng.choice(3, p=mix / mix.sum()))]
    side = int(rng.integers(lo, hi + 1))
    if kind == "bar":
        thickness = max(3, round(side / rng.uniform(3.0, 5.0)))
        return (side, thickness) if rng.random() < 0.5 else (thickness, side)
    jitter = math.log1p(spec.aspect_jitter)
    ratio = math.exp(rng.uniform(-jitter, jitter))  # w / h
    w = min(spec.max_side, max(4, round(side * math.sqrt(ratio))))
    h = min(spec.max_side, max(4, round(side / math.sqrt(ratio))))
    return w, h


def _place(spec: SynthSpec, rng: np.random.Generator, mask: np.ndarray, occupied: np.ndarray,
           boxes: list[list[float]]) -> Optional[tuple[int, int, list[float]]]:
    """Find a spot where ``mask`` touches no drawn shape and its box overlaps no box by ``max_iou`` or more."""
    h, w = mask.shape
    size = spec.image_size
    if w > size - 2 or h > size - 2:
        return None
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    # Tight box of the drawn pixels, relative to the patch.
    bx0, by0, bx1, by1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    for _ in range(_PLACEMENT_TRIES):
        x0 = int(rng.integers(1, size - w))
        y0 = int(rng.integers(1, size - h))
        if occupied[y0:y0 + h, x0:x0 + w][mask].any():
            continue
        box = [float(x0 + bx0), float(y0 + by0), float(bx1 - bx0), float(by1 - by0)]
        if _iou(box, boxes) >= spec.max_iou:
            continue
        return x0, y0, box
    return None


def _occupy(occupied: np.ndarray, mask: np.ndarray, x0: int, y0: int, gap: int) -> None:
    grown = _dilate(mask, gap)
    size = occupied.shape[0]
    gx0, gy0 = x0 - gap, y0 - gap
    cx0, cy0 = max(gx0, 0), max(gy0, 0)
    cx1, cy1 = min(gx0 + grown.shape[1], size), min(gy0 + grown.shape[0], size)
    occupied[cy0:cy1, cx0:cx1] |= grown[cy0 - gy0:cy1 - gy0, cx0 - gx0:cx1 - gx0]


def render_image(spec: SynthSpec, split: str, index: int) -> RenderedImage:
    """Draw image ``index`` of ``split``; depends only on (spec, split, index)."""
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index])
    size = spec.image_size
    canvas = _background(rng, size)  # float (size, size, 3)
    occupied = np.zeros((size, size), bool)
    image = RenderedImage(pixels=np.empty(0, np.uint8))
    all_boxes: list[list[float]] = []

    weights = np.asarray(spec.class_weights, dtype=np.float64)
    n_objects = int(rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1))
    labels = [int(c) for c in rng.choice(len(spec.classes), size=n_objects, p=weights / weights.sum())]
    shapes = [_shape_mask(spec.classes[c], *_sample_size(spec, rng, spec.classes[c]), rng) for c in labels]
    # Largest first: they are the hardest to fit.
    for i in sorted(range(n_objects), key=lambda i: -shapes[i].size):
        spot = _place(spec, rng, shapes[i], occupied, all_boxes)
        if spot is None:
            continue
        x0, y0, box = spot
        _draw(canvas, shapes[i], x0, y0, rng, spec)
        _occupy(occupied, shapes[i], x0, y0, spec.min_gap)
        all_boxes.append(box)
        image.boxes.append(box)
        image.labels.append(labels[i])
        image.masks.append((x0, y0, shapes[i]))

    n_distractors = int(rng.integers(spec.distractors_per_image[0], spec.distractors_per_image[1] + 1))
    for _ in range(n_distractors):
        kind = spec.distractor_shapes[int(rng.integers(len(spec.distractor_shapes)))]
        mask = _shape_mask(kind, *_sample_size(spec, rng, kind), rng)
        spot = _place(spec, rng, mask, occupied, all_boxes)
        if spot is None:
            continue
        x0, y0, box = spot
        _draw(canvas, mask, x0, y0, rng, spec)
        _occupy(occupied, mask, x0, y0, spec.min_gap)
        all_boxes.append(box)
        image.distractor_boxes.append(box)
        image.distractor_shapes.append(kind)

    if spec.noise_std > 0:
        canvas += rng.normal(0.0, spec.noise_std, size=canvas.shape)
    image.pixels = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image


def _draw(canvas: np.ndarray, mask: np.ndarray, x0: int, y0: int, rng: np.random.Generator,
          spec: SynthSpec) -> None:
    h, w = mask.shape
    patch = canvas[y0:y0 + h, x0:x0 + w]
    colour = _shape_colour(rng, patch[mask].mean(axis=0), spec.min_contrast)
    patch[mask] = colour


# ---------------------------------------------------------------------------------------------- the dataset

def _coco_categories(spec: SynthSpec) -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(spec.classes)]


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    # Fixed settings, no metadata chunks: the same pixels give the same bytes with the same Pillow/zlib. Level 1:
    # the noisy backgrounds barely compress anyway, and level 6 spent more time encoding than drawing (measured).
    Image.fromarray(pixels, "RGB").save(path, format="PNG", compress_level=1, optimize=False)


def _render_and_save(spec: SynthSpec, split: str, index: int, img_dir: Path) -> tuple[str, bytes, RenderedImage]:
    """Draw one image and write its PNG; returns (file name, pixel bytes, the drawing without its pixels)."""
    drawn = render_image(spec, split, index)
    file_name = f"{split}_{index:06d}.png"
    _save_png(drawn.pixels, img_dir / file_name)
    pixels, drawn.pixels = drawn.pixels.tobytes(), np.empty(0, np.uint8)
    return file_name, pixels, drawn


def _rendered(spec: SynthSpec, split: str, img_dir: Path) -> Iterator[tuple[str, bytes, RenderedImage]]:
    """The images of ``split`` in index order, drawn and written by one worker process per core.

    Every image depends only on (spec, split, index), so the workers' output is the sequential one, in order.
    """
    count = spec.num_images(split)
    workers = min(os.cpu_count() or 1, 4, max(count // 16, 1))
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        try:
            context = multiprocessing.get_context("fork")
        except ValueError:  # no fork on this platform: draw in this process
            workers = 1
    if workers <= 1:
        for index in range(count):
            yield _render_and_save(spec, split, index, img_dir)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_render_and_save, [spec] * count, [split] * count, range(count), [img_dir] * count,
                            chunksize=8)


def _dump(data: Any) -> bytes:
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def generate(spec: SynthSpec, out_dir: Path, progress: Progress | None = None) -> SynthDataset:
    """Write the dataset of ``spec`` into ``out_dir``: ``images/*.png``, ``train.json``, ``val.json``, ``meta.json``.

    Earlier generated images in ``out_dir/images`` that this spec does not produce are removed, so the folder
    always holds exactly one dataset. ``progress(done, total)`` is called after every image.
    """
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    try:
        img_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {img_dir}: {exc.strerror or exc}", "choose a writable folder") from None
    (out_dir / "meta.json").unlink(missing_ok=True)  # an interrupted rewrite must not look finished

    total = spec.num_train + spec.num_val
    done = 0
    content = hashlib.sha256()  # over file names, decoded pixels and annotation files
    written: set[str] = set()
    meta_splits: dict[str, Any] = {}
    for split in SPLITS:
        coco: dict[str, Any] = {
            "info": {"description": "fltool synthetic shapes", "generator_version": GENERATOR_VERSION,
                     "spec_hash": spec.short_hash()},
            "images": [], "annotations": [], "categories": _coco_categories(spec)}
        class_counts = dict.fromkeys(spec.classes, 0)
        sizes = dict.fromkeys(SIZE_NAMES, 0)
        n_distractors = 0
        for index, (file_name, pixels, drawn) in enumerate(_rendered(spec, split, img_dir)):
            image_id = index + 1
            written.add(file_name)
            content.update(file_name.encode())
            content.update(pixels)
            coco["images"].append({
                "id": image_id, "file_name": file_name, "width": spec.image_size, "height": spec.image_size,
                # Not annotations: where the unlabelled look-alikes were drawn (for false-positive analysis).
                "distractors": [{"bbox": b, "shape": s}
                                for b, s in zip(drawn.distractor_boxes, drawn.distractor_shapes)]})
            for box, label in zip(drawn.boxes, drawn.labels):
                area = box[2] * box[3]
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": label + 1,
                    "bbox": box, "area": area, "iscrowd": 0})
                class_counts[spec.classes[label]] += 1
                sizes[size_name(area)] += 1
            n_distractors += len(drawn.distractor_boxes)
            done += 1
            if progress is not None:
                progress(done, total)
        data = _dump(coco)
        content.update(data)
        (out_dir / f"{split}.json").write_bytes(data)
        n_boxes = len(coco["annotations"])
        meta_splits[split] = {
            "images": spec.num_images(split), "boxes": n_boxes, "distractors": n_distractors,
            "class_counts": class_counts, "size_histogram": sizes,
            "size_fractions": {k: round(v / max(n_boxes, 1), 4) for k, v in sizes.items()}}

    for stale in img_dir.iterdir():
        if _IMAGE_NAME.match(stale.name) and stale.name not in written:
            stale.unlink()
    meta = {"generator_version": GENERATOR_VERSION, "spec_hash": spec.short_hash(), "spec": spec.to_dict(),
            "splits": meta_splits, "content_hash": content.hexdigest()}
    # Written last, atomically: a folder with meta.json holds a finished dataset.
    tmp = out_dir / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out_dir / "meta.json")
    return SynthDataset.load(out_dir)


# ---------------------------------------------------------------------------------------------- the cache

def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$FLTOOL_CACHE``, else ``~/.cache/fltool``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("FLTOOL_CACHE") or Path.home() / ".cache" / "fltool").expanduser()


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (blocking). Yields False where file locks are unavailable."""
    try:
        import fcntl
    except ImportError:  # not POSIX: fall back on the atomic rename alone
        yield False
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_complete(root: Path) -> bool:
    return (root / "meta.json").is_file()


def default_dataset(spec: SynthSpec | None = None, cache_dir: Path | None = None,
                    progress: Progress | None = None) -> SynthDataset:
    """The dataset of ``spec`` (default: ``SynthSpec()``) from the cache, generated there on first use.

    It lives in ``<cache>/synth-<spec hash>/``. Generation writes a temporary sibling folder and renames it into
    place, so an interrupted run never leaves a folder that looks complete; a file lock makes a concurrent second
    process wait for the first instead of generating again, and leftovers of interrupted runs are removed.
    """
    spec = spec or SynthSpec()
    root = cache_root(cache_dir)
    name = f"synth-{spec.short_hash()}"
    final = root / name
    if _is_complete(final):
        return SynthDataset.load(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the dataset cache {root}: {exc.strerror or exc}",
                        "set FLTOOL_CACHE to a writable folder") from None

    with _exclusive_lock(root / f"{name}.lock") as locked:
        if _is_complete(final):  # another process finished it while we waited
            return SynthDataset.load(final)
        if locked:  # nobody else is generating this spec: temporary folders are leftovers
            for leftover in root.glob(f".{name}.tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            if final.exists():  # not ours to trust without meta.json
                shutil.rmtree(final, ignore_errors=True)
        tmp = root / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            generate(spec, tmp, progress)
            try:
                os.rename(tmp, final)
            except OSError:
                if not _is_complete(final):  # not a lost race: a real failure
                    raise
        except OSError as exc:
            raise DataError(f"cannot write the synthetic dataset into {root}: {exc.strerror or exc}",
                            "set FLTOOL_CACHE to a writable folder with some free space") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return SynthDataset.load(final)
