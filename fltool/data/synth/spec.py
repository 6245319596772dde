"""What determines a synthetic dataset: :class:`SynthSpec`, its named presets, and the constants they draw on."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from fltool.errors import ConfigError

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

