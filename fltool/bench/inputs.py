"""The benchmark's inputs: test scales, and the validation images decoded once and packed at each scale.

A *scale* is the short side the test pipeline's ``Resize`` aims for: scale ``s`` sets ``Resize.scale`` to ``(s * r,
s)`` where ``r`` is the long/short ratio of the config's own ``Resize.scale`` (1333/800 for MMDetection's COCO
configs, so 400 -> (666, 400); 1 for square configs, so 256 -> (256, 256)). With ``keep_ratio`` the image's short
side becomes ``s`` unless its long side would then exceed ``s * r`` (MMDetection's rule). Default scales: the
config's ``fltool_bench_scales``, else the paper's 400..800.

The test pipeline is split at its ``Resize``: the part before it (reading and decoding) runs once per image per run
and is shared by every model and scale using that dataset (``load_ms``); the part from the ``Resize`` on runs per
scale (``transform_ms``). Neither is inside the latency.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from fltool.errors import ConfigError, DataError
from fltool.progress import ProgressEvent, ProgressFn

#: The paper's test scales (Table 1e), used when neither --scales nor the config's ``fltool_bench_scales`` says.
PAPER_SCALES = (400, 500, 600, 700, 800)
#: Config key a config uses to state its own bench scales, e.g. ``fltool_bench_scales = [192, 256, 320]``.
SCALES_KEY = "fltool_bench_scales"
MIN_SCALE = 32
_RESIZE_TYPES = ("Resize", "mmdet.Resize")


def parse_scales(text: Union[str, Sequence[int], None]) -> Optional[list]:
    """``"400,500,600"`` (or a list) to sorted unique ints; None stays None."""
    if text is None:
        return None
    items = [s.strip() for s in text.split(",") if s.strip()] if isinstance(text, str) else list(text)
    if not items:
        raise ConfigError(f"no scales in '{text}'", "give comma-separated short sides, e.g. --scales 400,500,600")
    scales = []
    for item in items:
        try:
            value = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"scale '{item}' is not a whole number of pixels",
                              "give comma-separated short sides, e.g. --scales 400,500,600") from None
        if value < MIN_SCALE:
            raise ConfigError(f"scale {value} is too small", f"use short sides of at least {MIN_SCALE} px")
        scales.append(value)
    return sorted(set(scales))


def config_scales(cfg: Any, source: str) -> tuple:
    """The config's own ``fltool_bench_scales``, else the paper's; returns (scales, where they came from)."""
    value = cfg.get(SCALES_KEY)
    if value is None:
        return list(PAPER_SCALES), "the paper's Table 1e scales"
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{SCALES_KEY} in {source} is {value!r}", "write a list of short sides, e.g. "
                                                                   f"{SCALES_KEY} = [192, 256, 320]")
    try:
        return parse_scales(list(value)), f"{SCALES_KEY} of the config"
    except ConfigError as exc:
        raise ConfigError(f"{SCALES_KEY} in {source}: {exc.message}", exc.hint) from None


def resize_scale(config_scale: Any, short: int) -> tuple:
    """The ``Resize.scale`` for short side ``short``, keeping the config's long/short ratio and (w, h) order."""
    if isinstance(config_scale, (int, float)):
        return (short, short)
    w, h = (int(v) for v in config_scale)
    lo, hi = min(w, h), max(w, h)
    long = short * hi // lo
    return (long, short) if w >= h else (short, long)


def split_pipeline(pipeline: Sequence[dict], source: str) -> tuple:
    """The test pipeline as (load part: run once per image, scale part: from the ``Resize`` on, run per scale)."""
    steps = [dict(step) for step in pipeline]
    types = [str(step.get("type", "")) for step in steps]
    if any("TestTimeAug" in t for t in types):
        raise ConfigError(f"the test pipeline of {source} uses test-time augmentation",
                          "benchmark a config whose test pipeline has one Resize")
    where = [i for i, t in enumerate(types) if t in _RESIZE_TYPES]
    if len(where) != 1:
        found = "no Resize" if not where else f"{len(where)} Resize steps"
        raise ConfigError(f"the test pipeline of {source} has {found}; a scale sets the short side of its one "
                          "Resize", "use a config whose test pipeline is Load -> Resize -> ... -> PackDetInputs")
    i = where[0]
    return steps[:i], steps[i:]


def with_scale(scale_part: Sequence[dict], short: int) -> list:
    """The scale part of the pipeline with its Resize set to short side ``short``."""
    steps = copy.deepcopy(list(scale_part))
    resize = steps[0]
    base = resize.get("scale")
    resize["scale"] = resize_scale(base if base is not None else (short, short), short)
    resize.pop("scale_factor", None)
    return steps


@dataclass
class Images:
    """The decoded validation images of one dataset, shared by every model and scale that uses it."""

    results: list  # the load part's output per image (decoded image + annotation info)
    img_ids: list
    load_ms: list
    metainfo: dict
    subset_anns: dict = field(default_factory=dict)  # original ann_file -> filtered ann_file


def plain(node: Any) -> Any:
    return node.to_dict() if hasattr(node, "to_dict") else copy.deepcopy(node)


def _copy_for_transform(results: dict) -> dict:
    """A copy the scale pipeline may change (boxes are rescaled in place); the decoded image itself is shared,
    as Resize writes a new array."""
    img = results.get("img")
    rest = copy.deepcopy({k: v for k, v in results.items() if k != "img"})
    if img is not None:
        rest["img"] = img
    return rest


def load_images(cfg: Any, load_part: list, cache: dict, progress: ProgressFn) -> Images:
    """Build the test dataset (without its pipeline) and run the load part once per image; cached per dataset."""
    from mmdet.registry import DATASETS
    from mmengine.dataset import Compose

    ds_cfg = plain(cfg.test_dataloader.dataset)
    ds_cfg["pipeline"] = []
    key = json.dumps({"dataset": ds_cfg, "load": load_part}, sort_keys=True, default=str)
    if key in cache:
        return cache[key]
    from fltool.engine import runner as rn

    with rn.translate_errors():
        dataset = DATASETS.build(ds_cfg)
        n = len(dataset)
        if n == 0:
            raise DataError("the test dataset has no images", "check test_dataloader.dataset in the config")
        load = Compose(load_part)
        results, load_ms = [], []
        for i in range(n):
            info = dataset[i]
            t0 = time.perf_counter()
            out = load(info)
            load_ms.append((time.perf_counter() - t0) * 1e3)
            results.append(out)
            progress(ProgressEvent("stage", f"reading {n} validation images", i + 1, n))
    images = Images(results, [r["img_id"] for r in results], load_ms, dict(dataset.metainfo))
    cache[key] = images
    return images


def pack_at_scale(images: Images, scale_part: list, scale: int) -> tuple:
    """Every decoded image through the pipeline from its Resize on, at this scale: (batches of 1, ms per image)."""
    from mmengine.dataset import Compose, pseudo_collate

    from fltool.engine import runner as rn

    pipeline = Compose(with_scale(scale_part, scale))
    batches, transform_ms = [], []
    with rn.translate_errors():
        for res in images.results:
            t0 = time.perf_counter()
            packed = pipeline(_copy_for_transform(res))
            transform_ms.append((time.perf_counter() - t0) * 1e3)
            batches.append(pseudo_collate([packed]))
    return batches, transform_ms
