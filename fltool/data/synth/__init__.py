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

The package's parts: :mod:`.spec` (what determines a dataset), :mod:`.render` (drawing one image) and
:mod:`.dataset` (writing a dataset and caching the default one).
"""
from fltool.data.synth.dataset import Progress, SynthDataset, cache_root, default_dataset, generate
from fltool.data.synth.render import RenderedImage, render_image
from fltool.data.synth.spec import (
                                    DISTRACTORS,
                                    GENERATOR_VERSION,
                                    MAX_SIDE_FRACTION,
                                    MEDIUM_MAX_AREA,
                                    SHAPES,
                                    SIZE_NAMES,
                                    SMALL_MAX_AREA,
                                    SPEC_PRESETS,
                                    SPLITS,
                                    SynthSpec,
                                    size_name,
                                    spec_from_args,
)

__all__ = ["DISTRACTORS", "GENERATOR_VERSION", "MAX_SIDE_FRACTION", "MEDIUM_MAX_AREA", "Progress", "RenderedImage",
           "SHAPES", "SIZE_NAMES", "SMALL_MAX_AREA", "SPEC_PRESETS", "SPLITS", "SynthDataset", "SynthSpec",
           "cache_root", "default_dataset", "generate", "render_image", "size_name", "spec_from_args"]
