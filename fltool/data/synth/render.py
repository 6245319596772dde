"""Drawing one image of a synthetic dataset: shapes, look-alikes, colours and noise, from (spec, split, index) alone."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from fltool.data.synth.spec import SPLITS, SynthSpec

_PLACEMENT_TRIES = 40


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


