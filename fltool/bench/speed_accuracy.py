"""Speed against accuracy of RetinaNet models across test scales (the paper's Table 1e / Figure 2, on this machine).

For every (model, scale) point, on the same validation images:

- accuracy: COCO AP, AP50, AP75, APs, APm, APl, evaluated against an annotation file filtered to the images actually
  run (``annotations/`` in the work dir), so a subset of the split does not deflate AP. Without a checkpoint the
  model keeps its config's initialisation and AP is None ("n/a").
- speed: latency per image, batch size 1, from the image tensor to the final detections: the model's
  ``data_preprocessor`` (normalise, pad, move to the device) and ``model(..., mode='predict')`` (network, box
  decoding, NMS). The first ``warmup`` images of each point run untimed; then every image is timed, repeating passes
  over the images until at least ``min_iters`` were timed. On CUDA the device is synchronised before the clock is
  read at both ends. Reported: median and p90 ms, mean ms, images/s (= 1000 / mean ms), the device, the torch
  thread count and the batch size; and the process's CPU time per image with ``cpu_util`` (CPU seconds per wall
  second while timed): on a shared CPU, a ``cpu_util`` well under the thread count says other jobs took turns on
  the cores and the wall-clock latency is inflated (a note says so), while the CPU time stays close to the work.
- data time, reported separately and never inside the latency: ``load_ms`` (reading and decoding an image, done once
  per image per run) and ``transform_ms`` (the test pipeline from its ``Resize`` on: resize, annotations, packing).
- size: parameters, and FLOPs at that scale from MMEngine's ``FlopAnalyzer`` on the network's ``tensor`` forward
  (backbone + FPN + head; box decoding and NMS are not counted; one multiply-add counts as one FLOP, MMEngine's
  convention), at the padded input shape of the first image.

A *scale* is the short side the test pipeline's ``Resize`` aims for: scale ``s`` sets ``Resize.scale`` to ``(s * r,
s)`` where ``r`` is the long/short ratio of the config's own ``Resize.scale`` (1333/800 for MMDetection's COCO
configs, so 400 -> (666, 400); 1 for square configs, so 256 -> (256, 256)). With ``keep_ratio`` the image's short
side becomes ``s`` unless its long side would then exceed ``s * r`` (MMDetection's rule). Default scales: the
config's ``fltool_bench_scales``, else the paper's 400..800.

The validation images are read and decoded once per run (per distinct dataset), not once per point; each scale
then resizes the decoded images. Results go to ``results.csv``, ``results.json`` and ``speed_accuracy.png``.
"""
from __future__ import annotations

import copy
import csv
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from fltool.engine.runner import ProgressEvent, ProgressFn, _noop
from fltool.errors import CheckpointError, ConfigError, DataError, StackError
from fltool.fileio import atomic_path, cpu_name, save_figure, write_json

#: The paper's test scales (Table 1e), used when neither --scales nor the config's ``fltool_bench_scales`` says.
PAPER_SCALES = (400, 500, 600, 700, 800)
#: Config key a config uses to state its own bench scales, e.g. ``fltool_bench_scales = [192, 256, 320]``.
SCALES_KEY = "fltool_bench_scales"
MIN_SCALE = 32
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
NO_CHECKPOINT = ("none", "-")
RESULTS_SCHEMA = "fltool.bench.speed_accuracy/1"
#: One row of results.csv (and one entry of results.json's "points"), in this order.
CSV_COLUMNS = ("model", "config", "checkpoint", "scale", "input_hw", "num_images", *METRIC_KEYS,
               "median_ms", "p90_ms", "mean_ms", "images_per_s", "cpu_ms", "cpu_util", "timed_iters", "warmup_iters", "load_ms",
               "transform_ms", "params", "flops", "device", "threads", "batch_size", "fuse_conv_bn", "pareto")
#: A point whose p90 latency exceeds this multiple of its median gets a note (the device was shared or throttled).
UNSTEADY_RATIO = 1.5
#: A CPU point whose process used fewer CPU-seconds per wall second than this times its thread count, while timed,
#: had its cores shared with other jobs (idle OpenMP threads spin, so an unshared run stays close to the count).
SHARED_CPU_UTIL = 0.8
_RESIZE_TYPES = ("Resize", "mmdet.Resize")


# --------------------------------------------------------------------------------------------------------------
# Options and results
# --------------------------------------------------------------------------------------------------------------
@dataclass
class BenchOptions:
    configs: Sequence[str]
    checkpoints: Sequence[Union[str, Path, None]] = ()  # one per config, or none at all; "none" = no weights
    scales: Optional[Sequence[int]] = None  # None: each config's fltool_bench_scales, else PAPER_SCALES
    num_images: int = 50
    device: str = "cpu"
    work_dir: Path = Path("work_dirs/speed_accuracy")
    cfg_options: Union[Sequence[str], dict, None] = None
    fuse_conv_bn: bool = False
    warmup: int = 5
    min_iters: int = 30
    threads: Optional[int] = None  # None: torch's current setting (recorded)
    paper: bool = False  # draw the paper's Table 1e points in the plot
    trust_checkpoint: bool = False


@dataclass(frozen=True)
class ModelSpec:
    label: str
    config: str
    checkpoint: Optional[Path]


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p90_ms: float
    mean_ms: float
    images_per_s: float  # batch_size * 1000 / mean_ms
    iterations: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], batch_size: int = 1) -> "LatencyStats":
        if not samples_ms:
            raise ValueError("no timed iterations")
        mean = statistics.fmean(samples_ms)
        return cls(median_ms=statistics.median(samples_ms), p90_ms=_percentile(samples_ms, 90.0), mean_ms=mean,
                   images_per_s=batch_size * 1000.0 / mean if mean > 0 else float("inf"),
                   iterations=len(samples_ms))


@dataclass
class BenchPoint:
    model: str
    config: str
    checkpoint: Optional[str]
    scale: int
    input_hw: str  # the network's (padded) input of the first image, "HxW"
    num_images: int
    metrics: dict  # METRIC_KEYS -> float in [0, 1], or None (no checkpoint, or no ground truth of that size)
    latency: LatencyStats
    warmup_iters: int
    cpu_ms: float  # median per image: the process's CPU time (all threads) while timed
    cpu_util: float  # CPU seconds per wall second while timed (about `threads` when nothing else ran)
    load_ms: float  # median per image: read + decode (once per run)
    transform_ms: float  # median per image: the pipeline from Resize on, at this scale
    params: int
    flops: int
    device: str
    threads: int
    batch_size: int = 1
    fuse_conv_bn: bool = False
    pareto: bool = False

    @property
    def ap(self) -> Optional[float]:
        return self.metrics.get("AP")

    def row(self) -> dict:
        """One results.csv / results.json row, keyed by CSV_COLUMNS."""
        values = dict(model=self.model, config=self.config, checkpoint=self.checkpoint, scale=self.scale,
                      input_hw=self.input_hw, num_images=self.num_images,
                      **{k: self.metrics.get(k) for k in METRIC_KEYS},
                      median_ms=self.latency.median_ms, p90_ms=self.latency.p90_ms, mean_ms=self.latency.mean_ms,
                      images_per_s=self.latency.images_per_s, cpu_ms=self.cpu_ms, cpu_util=self.cpu_util,
                      timed_iters=self.latency.iterations,
                      warmup_iters=self.warmup_iters, load_ms=self.load_ms, transform_ms=self.transform_ms,
                      params=self.params, flops=self.flops, device=self.device, threads=self.threads,
                      batch_size=self.batch_size, fuse_conv_bn=self.fuse_conv_bn, pareto=self.pareto)
        return {k: values[k] for k in CSV_COLUMNS}


@dataclass
class BenchResult:
    points: list
    work_dir: Path
    csv_file: Path
    json_file: Path
    plot_file: Path
    environment: dict
    images_loaded: int  # images read and decoded in the whole run (once each, whatever the number of points)
    wall_s: float
    notes: list = field(default_factory=list)


PointFn = Callable[[BenchPoint], None]


# --------------------------------------------------------------------------------------------------------------
# Small pieces (pure; tested on their own)
# --------------------------------------------------------------------------------------------------------------
def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), without needing numpy."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


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


def pair_models(configs: Sequence[str], checkpoints: Sequence[Union[str, Path, None]]) -> list:
    """(config, checkpoint) pairs with unique labels; a checkpoint of None/"none"/"-" means: no weights."""
    if not configs:
        raise ConfigError("no config given", "give one or more configs, e.g. fltool bench speed-accuracy "
                                             "retinanet_r18-gn_synth_256 --checkpoint iter_600.pth")
    checkpoints = list(checkpoints or [])
    if checkpoints and len(checkpoints) != len(configs):
        raise ConfigError(f"{len(configs)} config(s) but {len(checkpoints)} --checkpoint value(s)",
                          "give one --checkpoint per config, in the same order ('none' for a config measured "
                          "without weights), or none at all")
    specs, seen = [], set()
    for i, config in enumerate(configs):
        raw = checkpoints[i] if checkpoints else None
        ckpt = None if raw is None or str(raw).strip().lower() in NO_CHECKPOINT else Path(raw)
        if ckpt is not None and not ckpt.is_file():
            raise CheckpointError(f"checkpoint not found: {ckpt}", "give the .pth file written by `fltool train` "
                                                                   "(or 'none' to measure without weights)")
        stem = Path(str(config)).name
        label = stem[:-3] if stem.endswith(".py") else stem
        if label in seen:
            label = f"{label}:{ckpt.stem if ckpt else 'init'}"
        base, n = label, 2
        while label in seen:
            label, n = f"{base}#{n}", n + 1
        seen.add(label)
        specs.append(ModelSpec(label, str(config), ckpt))
    return specs


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


def filter_coco(data: dict, img_ids: Sequence[int]) -> dict:
    """A COCO dict with only the images ``img_ids`` (in that order) and their annotations."""
    wanted = list(img_ids)
    by_id = {img["id"]: img for img in data.get("images", [])}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise DataError(f"image id {missing[0]} is not in the annotation file ({len(missing)} missing)",
                        "use the evaluator's annotation file of the same split as the test dataset")
    keep = set(wanted)
    out = {k: v for k, v in data.items() if k not in ("images", "annotations")}
    out["images"] = [by_id[i] for i in wanted]
    out["annotations"] = [a for a in data.get("annotations", []) if a.get("image_id") in keep]
    return out


def pareto_front(points: Sequence[Any], ms: Callable = lambda p: p.latency.median_ms,
                 ap: Callable = lambda p: p.ap) -> list:
    """Indices of the points no other point beats (as fast or faster and as accurate or more, better in one).
    Points without AP are never on the front."""
    scored = [(i, ms(p), ap(p)) for i, p in enumerate(points) if ap(p) is not None]
    front = []
    for i, t, a in scored:
        dominated = any((t2 <= t and a2 >= a) and (t2 < t or a2 > a) for j, t2, a2 in scored if j != i)
        if not dominated:
            front.append(i)
    return front


def load_paper_reference() -> dict:
    """The paper's Table 1e (fltool/reference/paper_table1e.json): R-50 and R-101, AP (%) and ms at 400..800."""
    path = Path(__file__).resolve().parents[1] / "reference" / "paper_table1e.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StackError(f"cannot read fltool's reference data {path}: {exc}", "reinstall fltool") from None


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------
def synchronizer(device: str) -> Callable[[], None]:
    """What waits for queued device work before the clock is read: ``torch.cuda.synchronize`` on CUDA, else nothing."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


@dataclass
class Timing:
    samples_ms: list  # wall-clock ms of each timed iteration (warm-up excluded)
    warmup: int
    outputs: list  # what ``step`` returned for each item in the first timed pass
    cpu_ms: list = field(default_factory=list)  # the process's CPU time (all threads) in each timed iteration

    @property
    def cpu_util(self) -> float:
        """CPU seconds the process used per wall second while timed: about the thread count when it had the CPU
        to itself, less when other jobs took turns on its cores."""
        wall = sum(self.samples_ms)
        return sum(self.cpu_ms) / wall if wall > 0 and self.cpu_ms else float("nan")


def time_steps(step: Callable[[int], Any], num_items: int, *, warmup: int, min_iters: int, device: str,
               clock: Callable[[], float] = time.perf_counter, cpu_clock: Callable[[], float] = time.process_time,
               on_iter: Optional[Callable[[int, int], None]] = None) -> Timing:
    """Run ``step(i)`` ``warmup`` times untimed, then time passes over all items until ``min_iters`` were timed.

    Each timed iteration is bracketed by device synchronisation (CUDA), so the time covers the work it queued.
    The process's CPU time is read alongside: on a shared CPU it shows how much of the wall time was the model's.
    """
    if num_items < 1:
        raise ValueError("nothing to time")
    sync = synchronizer(device)
    passes = max(1, math.ceil(min_iters / num_items))
    total = warmup + passes * num_items
    done = 0
    for i in range(warmup):
        step(i % num_items)
        done += 1
        if on_iter:
            on_iter(done, total)
    samples: list = []
    cpu: list = []
    outputs: list = [None] * num_items
    for p in range(passes):
        for i in range(num_items):
            sync()
            t0, c0 = clock(), cpu_clock()
            out = step(i)
            sync()
            c1, t1 = cpu_clock(), clock()
            samples.append((t1 - t0) * 1e3)
            cpu.append((c1 - c0) * 1e3)
            if p == 0:
                outputs[i] = out
            done += 1
            if on_iter:
                on_iter(done, total)
    return Timing(samples, warmup, outputs, cpu)


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Images:
    """The decoded validation images of one dataset, shared by every model and scale that uses it."""

    results: list  # the load part's output per image (decoded image + annotation info)
    img_ids: list
    load_ms: list
    metainfo: dict
    subset_anns: dict = field(default_factory=dict)  # original ann_file -> filtered ann_file


def check_device(device: str) -> str:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device '{device}'", "use --device cpu or --device cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{device}' is not supported", "use --device cpu or --device cuda[:N]")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StackError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU",
                             "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} GPU(s)", "pick another index")
    return str(dev)


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def _drop_pretrained_init(node: Any) -> int:
    """Remove ``init_cfg=dict(type='Pretrained', ...)`` (and ``pretrained=``) from a model config; returns how many.
    Without a checkpoint the model keeps its own initialisation, and nothing is downloaded."""
    count = 0
    if isinstance(node, dict):
        init = node.get("init_cfg")
        if isinstance(init, dict) and init.get("type") == "Pretrained":
            node["init_cfg"] = None
            count += 1
        elif isinstance(init, list):
            kept = [c for c in init if not (isinstance(c, dict) and c.get("type") == "Pretrained")]
            count += len(init) - len(kept)
            node["init_cfg"] = kept or None
        if node.get("pretrained"):
            node["pretrained"] = None
            count += 1
        for value in node.values():
            count += _drop_pretrained_init(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _drop_pretrained_init(value)
    return count


def _plain(node: Any) -> Any:
    return node.to_dict() if hasattr(node, "to_dict") else copy.deepcopy(node)


def _copy_for_transform(results: dict) -> dict:
    """A copy the scale pipeline may change (boxes are rescaled in place); the decoded image itself is shared,
    as Resize writes a new array."""
    img = results.get("img")
    rest = copy.deepcopy({k: v for k, v in results.items() if k != "img"})
    if img is not None:
        rest["img"] = img
    return rest


def _load_images(cfg: Any, load_part: list, cache: dict, progress: ProgressFn) -> _Images:
    """Build the test dataset (without its pipeline) and run the load part once per image; cached per dataset."""
    from mmengine.dataset import Compose

    from mmdet.registry import DATASETS

    ds_cfg = _plain(cfg.test_dataloader.dataset)
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
    images = _Images(results, [r["img_id"] for r in results], load_ms, dict(dataset.metainfo))
    cache[key] = images
    return images


def _subset_evaluator_cfg(cfg: Any, images: _Images, work_dir: Path) -> Any:
    """The test evaluator config with every ``ann_file`` replaced by one holding only the images run."""
    evaluator = _plain(cfg.test_evaluator)
    for ev in evaluator if isinstance(evaluator, list) else [evaluator]:
        ann = ev.get("ann_file")
        if not ann:
            continue
        if ann not in images.subset_anns:
            path = Path(ann)
            if not path.is_file():
                raise DataError(f"test annotation file not found: {ann}", "fix test_evaluator.ann_file")
            try:
                data = json.loads(path.read_text())
            except ValueError as exc:
                raise DataError(f"annotation file {ann} is not valid JSON: {exc}") from None
            subset = filter_coco(data, images.img_ids)
            digest = hashlib.sha1(f"{path.resolve()}:{images.img_ids}".encode()).hexdigest()[:8]
            out = work_dir / "annotations" / f"{path.stem}_{len(images.img_ids)}img_{digest}.json"
            write_json(out, subset, indent=None)
            images.subset_anns[ann] = str(out)
        ev["ann_file"] = images.subset_anns[ann]
    return evaluator


def _complexity(model: Any, inputs: Any) -> tuple:
    """(FLOPs, parameters) of the network's tensor forward at this input (MMEngine: one multiply-add = 1 FLOP)."""
    import torch
    from mmengine.analysis import FlopAnalyzer, parameter_count

    with torch.no_grad():
        analyzer = FlopAnalyzer(model, (inputs,))
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops = int(analyzer.total())
    return flops, int(parameter_count(model)[""])


def timing_notes(points: Sequence[BenchPoint]) -> list:
    """What the user should know about how far the latencies can be trusted (one note per kind of problem)."""
    notes = []
    shared = [p for p in points if p.device == "cpu" and p.cpu_util < SHARED_CPU_UTIL * p.threads]
    if shared:
        worst = min(shared, key=lambda p: p.cpu_util / p.threads)
        notes.append(f"{len(shared)} of {len(points)} point(s) were timed while other jobs shared the CPU (e.g. "
                     f"{worst.model} @ {worst.scale}: {worst.cpu_util:.2f} CPU-seconds per second with threads="
                     f"{worst.threads}, {worst.latency.median_ms:.1f} ms wall, {worst.cpu_ms:.1f} ms CPU per image): "
                     "their ms is inflated" + ("; with one thread 'cpu ms' shows the work itself" if worst.threads == 1
                                               else "; --threads 1 is steadier on a shared CPU"))
    unsteady = [p for p in points if p.latency.p90_ms > UNSTEADY_RATIO * p.latency.median_ms]
    if unsteady:
        where = ", ".join(f"{p.model} @ {p.scale}" for p in unsteady)
        many = any(p.threads > 1 for p in unsteady)
        notes.append(f"unsteady timings (p90 above {UNSTEADY_RATIO} x the median) at {where}: something else used "
                     "the device" + ("; fewer --threads are steadier on a shared CPU" if many else ""))
    return notes


def _prepare(spec: ModelSpec, opts: BenchOptions, work_dir: Path, progress: ProgressFn, notes: list) -> tuple:
    """The model's test config, ready to build; its scales; its test pipeline split at the Resize."""
    from fltool.engine.evaluate import EvalOptions, prepare_eval_config

    progress(ProgressEvent("stage", f"{spec.label}: loading config"))
    cfg = prepare_eval_config(EvalOptions(config=spec.config, checkpoint=spec.checkpoint or Path(""),
                                          work_dir=work_dir / "logs" / spec.label, cfg_options=opts.cfg_options,
                                          num_images=opts.num_images), progress)
    if opts.scales:
        scales = list(opts.scales)
    else:
        scales, origin = config_scales(cfg, spec.config)
        notes.append(f"{spec.label}: scales {', '.join(map(str, scales))} ({origin})")
    if spec.checkpoint is None and _drop_pretrained_init(cfg.model):
        notes.append(f"{spec.label}: no checkpoint, so the pretrained backbone init was skipped; the latency "
                     "includes NMS over the boxes above score_thr, which depends on the weights")
    load_part, scale_part = split_pipeline(cfg.test_dataloader.dataset.pipeline, spec.config)
    return cfg, scales, load_part, scale_part


def _build_model(cfg: Any, spec: ModelSpec, state: Optional[dict], opts: BenchOptions, device: str,
                 notes: list) -> tuple:
    """(runner, model in eval mode on the device): weights loaded and checked, or the config's own init."""
    import torch

    from fltool.engine import runner as rn

    runner = rn.build_runner(cfg)
    rn.quiet_console_logging(runner)
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    if state is not None:
        rn.load_weights_strict(model, state, str(spec.checkpoint))
    else:
        model.init_weights()  # the config's init (e.g. the classifier prior), not torch's defaults
    if opts.fuse_conv_bn:
        from mmcv.cnn import fuse_conv_bn

        def count() -> int:
            return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())

        before = count()
        model = fuse_conv_bn(model)
        notes.append(f"{spec.label}: --fuse-conv-bn folded {before - count()} BatchNorm layer(s) into their convs")
    return runner, model.to(device).eval()


def _pack_at_scale(images: _Images, scale_part: list, scale: int) -> tuple:
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


def _subset_metrics(runner: Any, evaluator_cfg: Any, images: _Images, batches: list, preds: list) -> dict:
    """COCO metrics of the predictions against the annotation file filtered to these images."""
    from fltool.engine.train import coco_metrics

    evaluator = runner.build_evaluator(copy.deepcopy(evaluator_cfg))
    evaluator.dataset_meta = images.metainfo
    for batch, pred_per_image in zip(batches, preds):
        samples = []
        for sample, pred in zip(batch["data_samples"], pred_per_image):
            record = sample.to_dict()
            record["pred_instances"] = pred.to_dict()
            samples.append(record)
        evaluator.process(data_samples=samples, data_batch=batch)
    found = coco_metrics(evaluator.evaluate(len(batches)))
    return {k: found.get(k) for k in METRIC_KEYS}


def _bench_model(spec: ModelSpec, opts: BenchOptions, device: str, work_dir: Path, cache: dict,
                 progress: ProgressFn, on_point: Optional[PointFn], notes: list) -> list:
    """Every scale of one model: FLOPs, timed inference and (with weights) AP on the shared decoded images."""
    import torch

    from fltool.engine import runner as rn
    from fltool.engine.checkpoint import checkpoint_state_dict

    cfg, scales, load_part, scale_part = _prepare(spec, opts, work_dir, progress, notes)
    state = None
    if spec.checkpoint is not None:
        progress(ProgressEvent("stage", f"{spec.label}: loading checkpoint {spec.checkpoint.name}"))
        state = checkpoint_state_dict(spec.checkpoint, trust=opts.trust_checkpoint)

    points = []
    with rn.captured_stdout(rn.stdout_log(cfg)):
        runner, model = _build_model(cfg, spec, state, opts, device, notes)
        images = _load_images(cfg, load_part, cache, progress)
        n = len(images.results)
        if n < opts.num_images:
            notes.append(f"{spec.label}: the test set has {n} images, fewer than --num-images {opts.num_images}")
        evaluator_cfg = _subset_evaluator_cfg(cfg, images, work_dir) if state is not None else None

        for scale in scales:
            where = f"{spec.label} @ {scale}"
            batches, transform_ms = _pack_at_scale(images, scale_part, scale)
            with torch.no_grad():
                inputs = model.data_preprocessor(batches[0], False)["inputs"]  # (1, 3, H, W), padded
                progress(ProgressEvent("stage", f"{where}: counting FLOPs"))
                flops, params = _complexity(model, inputs)

                def step(i: int) -> list:
                    data = model.data_preprocessor(batches[i], False)
                    return [sample.pred_instances for sample in model(**data, mode="predict")]

                def report(done: int, total: int) -> None:
                    progress(ProgressEvent("stage", f"{where}: timing", done, total))

                threads = torch.get_num_threads()
                timing = time_steps(step, n, warmup=opts.warmup, min_iters=opts.min_iters, device=device,
                                    on_iter=report)
            metrics: dict = dict.fromkeys(METRIC_KEYS)
            if evaluator_cfg is not None:
                progress(ProgressEvent("stage", f"{where}: evaluating"))
                metrics = _subset_metrics(runner, evaluator_cfg, images, batches, timing.outputs)

            point = BenchPoint(model=spec.label, config=spec.config,
                               checkpoint=str(spec.checkpoint) if spec.checkpoint else None, scale=scale,
                               input_hw=f"{inputs.shape[-2]}x{inputs.shape[-1]}", num_images=n, metrics=metrics,
                               latency=LatencyStats.from_samples(timing.samples_ms), warmup_iters=timing.warmup,
                               cpu_ms=statistics.median(timing.cpu_ms), cpu_util=timing.cpu_util,
                               load_ms=statistics.median(images.load_ms), transform_ms=statistics.median(transform_ms),
                               params=params, flops=flops, device=device, threads=threads,
                               fuse_conv_bn=opts.fuse_conv_bn)
            points.append(point)
            if on_point is not None:
                on_point(point)
    return points


def run_speed_accuracy(opts: BenchOptions, progress: ProgressFn = _noop,
                       on_point: Optional[PointFn] = None) -> BenchResult:
    """Measure every (model, scale) point; write results.csv, results.json and speed_accuracy.png."""
    import torch

    from fltool import compat

    start = time.time()
    compat.apply()
    if opts.num_images < 1 or opts.warmup < 0 or opts.min_iters < 1:
        raise ConfigError("--num-images and --min-iters must be at least 1 and --warmup at least 0")
    if opts.threads is not None and opts.threads < 1:
        raise ConfigError(f"--threads {opts.threads} is not a thread count", "give 1 or more")
    device = check_device(opts.device)
    specs = pair_models(opts.configs, opts.checkpoints)
    scales = parse_scales(opts.scales) if opts.scales else None
    run_opts = copy.copy(opts)
    run_opts.scales = scales
    work_dir = Path(opts.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)

    old_threads = torch.get_num_threads()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    notes: list = []
    cache: dict = {}
    points: list = []
    try:
        for spec in specs:
            points += _bench_model(spec, run_opts, device, work_dir, cache, progress, on_point, notes)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    for i in pareto_front(points):
        points[i].pareto = True
    notes += timing_notes(points)

    import mmdet
    import mmengine

    environment = dict(device=device, device_name=_device_name(device), threads=threads, batch_size=1,
                       cpu_count=os.cpu_count(), torch=torch.__version__, mmdet=mmdet.__version__,
                       mmengine=mmengine.__version__, python=platform.python_version(), platform=platform.platform(),
                       load_average_start=load_start,
                       load_average_end=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)
    images_loaded = sum(len(images.results) for images in cache.values())
    result = BenchResult(points=points, work_dir=work_dir, csv_file=work_dir / "results.csv",
                         json_file=work_dir / "results.json", plot_file=work_dir / "speed_accuracy.png",
                         environment=environment, images_loaded=images_loaded, wall_s=time.time() - start,
                         notes=notes)
    progress(ProgressEvent("stage", "writing results and plot"))
    write_csv(points, result.csv_file)
    write_results_json(result, run_opts)
    plot_speed_accuracy(points, result.plot_file, environment, paper=load_paper_reference() if opts.paper else None)
    return result


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------
def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(points: Sequence[BenchPoint], path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for point in points:
            writer.writerow({k: _csv_value(v) for k, v in point.row().items()})
    return path


def write_results_json(result: BenchResult, opts: BenchOptions) -> Path:
    data = {
        "schema": RESULTS_SCHEMA,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "what": {"latency": "ms per image, batch size 1, image tensor to final detections (data_preprocessor + "
                            "predict: network, box decoding, NMS), after warm-up; median/p90/mean over timed_iters",
                 "images_per_s": "batch_size * 1000 / mean_ms",
                 "cpu_ms": "median CPU time of the process (all threads) per timed image",
                 "cpu_util": "CPU seconds per wall second while timed: about `threads` when the process had its "
                             "cores to itself; lower means other jobs shared them and median_ms is inflated",
                 "load_ms": "median ms per image to read and decode it (once per run; not in the latency)",
                 "transform_ms": "median ms per image for the pipeline from Resize on at that scale (not in the "
                                 "latency)",
                 "AP": "COCO bbox AP in [0, 1] on num_images images, against an annotation file holding only those "
                       "images; null without a checkpoint",
                 "flops": "MMEngine FlopAnalyzer on the tensor forward (backbone+FPN+head, no NMS) at input_hw; "
                          "one multiply-add = 1",
                 "scale": "short side set in the test pipeline's Resize (long side capped by the config's ratio)"},
        "environment": result.environment,
        "settings": {"num_images": opts.num_images, "warmup": opts.warmup, "min_iters": opts.min_iters,
                     "fuse_conv_bn": opts.fuse_conv_bn, "scales": list(opts.scales) if opts.scales else None,
                     "cfg_options": opts.cfg_options, "paper": opts.paper},
        "images_loaded": result.images_loaded,
        "wall_s": round(result.wall_s, 1),
        "points": [p.row() for p in result.points],
        "notes": result.notes,
        "files": {"csv": str(result.csv_file), "json": str(result.json_file), "plot": str(result.plot_file)},
    }
    return write_json(result.json_file, data)


def plot_speed_accuracy(points: Sequence[BenchPoint], path: Path, environment: Optional[dict] = None,
                        paper: Optional[dict] = None) -> Path:
    """AP (%) against ms per image: one line per model, points labelled by scale, the Pareto front marked, and
    optionally the paper's Table 1e. Without any AP (no checkpoints) it plots ms per image against scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    env = environment or {}
    where = f"{env.get('device', '?')}, threads={env.get('threads', '?')}, batch 1"
    fig = Figure(figsize=(8.5, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    models = list(dict.fromkeys(p.model for p in points))
    with_ap = [p for p in points if p.ap is not None]
    without_ap = [m for m in models if not any(p.ap is not None for p in points if p.model == m)]
    all_ms = [p.latency.median_ms for p in points]

    if with_ap or paper:
        for model in models:
            pts = sorted((p for p in points if p.model == model and p.ap is not None), key=lambda p: p.scale)
            if not pts:
                continue
            xs, ys = [p.latency.median_ms for p in pts], [100 * p.ap for p in pts]
            ax.plot(xs, ys, marker="o", label=model)
            for p, x, y in zip(pts, xs, ys):
                ax.annotate(str(p.scale), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = sorted((p for p in points if p.pareto), key=lambda p: p.latency.median_ms)
        if front:
            fx, fy = [p.latency.median_ms for p in front], [100 * p.ap for p in front]
            ax.step(fx, fy, where="post", linestyle="--", color="0.4", linewidth=1)
            ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="black", linewidths=1.2, zorder=3,
                       label="Pareto front (measured)")
        if paper:
            for k, model in enumerate(paper.get("models", [])):
                pts = sorted(model["points"], key=lambda q: q["scale"])
                xs, ys = [q["ms"] for q in pts], [q["AP"] for q in pts]
                all_ms += xs
                ax.plot(xs, ys, marker="s", linestyle=":", color=("0.35", "0.6")[k % 2],
                        label=f"{model['name']}: M40 GPU, COCO test-dev")
                for q, x, y in zip(pts, xs, ys):
                    ax.annotate(str(q["scale"]), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7,
                                color="0.4")
        ax.set_xlabel(f"ms per image (median; {where})")
        ax.set_ylabel("COCO AP (%)")
        ax.set_title("Speed vs accuracy (labels: test scale, short side px)")
        if without_ap:
            fig.text(0.01, 0.01, "AP n/a (no checkpoint), not plotted: " + ", ".join(without_ap), fontsize=8)
    else:
        for model in models:
            pts = sorted((p for p in points if p.model == model), key=lambda p: p.scale)
            ax.plot([p.scale for p in pts], [p.latency.median_ms for p in pts], marker="o", label=model)
        ax.set_xlabel("test scale (short side, px)")
        ax.set_ylabel(f"ms per image (median; {where})")
        ax.set_title("Latency vs scale (no checkpoint given: AP n/a)")
    if ax.get_xlabel().startswith("ms") and all_ms and min(all_ms) > 0 and max(all_ms) / min(all_ms) > 8:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)

