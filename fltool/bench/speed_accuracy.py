"""Speed against accuracy of RetinaNet models across test scales (the paper's Table 1e / Figure 2, on this machine).

For every (model, scale) point, on the same validation images (read and decoded once per run, then resized per
scale: :mod:`fltool.bench.inputs`):

- accuracy: COCO AP, AP50, AP75, APs, APm, APl on exactly the images run (:mod:`fltool.engine.metrics`). Without a
  checkpoint the model keeps its config's initialisation and AP is None ("n/a").
- runtimes: each point runs with every ``--backend`` at every ``--precision`` it supports (fp32, bf16, int8:
  :mod:`fltool.bench.runtimes`), one row each, each with its own AP.
- speed: latency per image, batch size 1, from the image tensor to the final detections: the model's
  ``data_preprocessor`` (normalise, pad, move to the device) and ``model(..., mode='predict')`` (network, box
  decoding, NMS), after warm-up, with the process's CPU time alongside (:mod:`fltool.bench.timing`).
- data time, reported separately and never inside the latency: ``load_ms`` (reading and decoding an image, done once
  per image per run) and ``transform_ms`` (the test pipeline from its ``Resize`` on: resize, annotations, packing).
- size: parameters, and FLOPs at that scale from MMEngine's ``FlopAnalyzer`` on the network's ``tensor`` forward
  (backbone + FPN + head; box decoding and NMS are not counted; one multiply-add counts as one FLOP, MMEngine's
  convention), at the padded input shape of the first image.

This module runs the points; results go to ``results.csv``, ``results.json`` and ``speed_accuracy.png``
(:mod:`fltool.bench.report`).
"""
from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from fltool.bench.inputs import config_scales, load_images, pack_at_scale, parse_scales, split_pipeline
from fltool.bench.report import (
    BenchPoint,
    BenchResult,
    backend_notes,
    load_paper_reference,
    pareto_front,
    plot_speed_accuracy,
    write_csv,
    write_results_json,
)
from fltool.bench.runtimes import RuntimeJob, build_runtimes
from fltool.bench.runtimes import parse_precisions as parse_bench_precisions
from fltool.bench.timing import LatencyStats, check_device, device_name, time_steps, timing_notes
from fltool.engine.backends import BENCH_BACKENDS, parse_backends
from fltool.engine.metrics import METRIC_KEYS, subset_evaluator_cfg, subset_metrics
from fltool.errors import CheckpointError, ConfigError
from fltool.progress import ProgressEvent, ProgressFn, no_progress

NO_CHECKPOINT = ("none", "-")


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
    backends: Sequence[str] = ("pytorch",)  # each point is measured with each: pytorch, mmdet, onnxruntime, openvino
    precisions: Sequence[str] = ("fp32",)  # and at each precision the backend supports: fp32, bf16, int8
    calib_images: int = 100  # openvino int8: training images NNCF calibrates on


@dataclass(frozen=True)
class ModelSpec:
    label: str
    config: str
    checkpoint: Optional[Path]


PointFn = Callable[[BenchPoint], None]


def pair_models(configs: Sequence[str], checkpoints: Sequence[Union[str, Path, None]]) -> list:
    """(config, checkpoint) pairs with unique labels; a checkpoint of None/"none"/"-" means: no weights."""
    if not configs:
        raise ConfigError("no config given", "give one or more configs, e.g. fltool bench speed-accuracy "
                                             "retinanet_r18-gn_synth_256 --checkpoint iter_1200.pth")
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


def _complexity(model: Any, inputs: Any) -> tuple:
    """(FLOPs, parameters) of the network's tensor forward at this input (MMEngine: one multiply-add = 1 FLOP)."""
    import torch
    from mmengine.analysis import FlopAnalyzer, parameter_count

    with torch.no_grad():
        analyzer = FlopAnalyzer(model, (inputs,))
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops = int(analyzer.total())
    return flops, int(parameter_count(model)[""])


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

    runner, model = rn.built_runner_with_weights(cfg, state, str(spec.checkpoint))
    if state is None:
        model.init_weights()  # the config's init (e.g. the classifier prior), not torch's defaults
    if opts.fuse_conv_bn:
        from mmcv.cnn import fuse_conv_bn

        def count() -> int:
            return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())

        before = count()
        model = fuse_conv_bn(model)
        notes.append(f"{spec.label}: --fuse-conv-bn folded {before - count()} BatchNorm layer(s) into their convs")
    return runner, model.to(device).eval()


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
        images = load_images(cfg, load_part, cache, progress)
        n = len(images.results)
        if n < opts.num_images:
            notes.append(f"{spec.label}: the test set has {n} images, fewer than --num-images {opts.num_images}")
        evaluator_cfg = (subset_evaluator_cfg(cfg, images.img_ids, work_dir, images.subset_anns)
                         if state is not None else None)

        job = RuntimeJob(cfg, model, spec.label, {"config": spec.config, "checkpoint": str(spec.checkpoint)},
                         images.metainfo, work_dir, device, opts.calib_images)
        runtimes = build_runtimes(job, opts.backends, opts.precisions, progress, notes)  # mmdet's copy: NCHW
        if device == "cpu" and any(h.get("type") == "ChannelsLastHook" for h in cfg.get("custom_hooks") or []):
            model.to(memory_format=torch.channels_last)  # as the config's hook runs it in train and eval
            notes.append(f"{spec.label}: pytorch runs with channels-last (NHWC) conv weights, as the config's "
                         "ChannelsLastHook makes fltool train/eval run it")
        for scale in scales:
            batches, transform_ms = pack_at_scale(images, scale_part, scale)
            with torch.no_grad():
                inputs = model.data_preprocessor(batches[0], False)["inputs"]  # (1, 3, H, W), padded
                progress(ProgressEvent("stage", f"{spec.label} @ {scale}: counting FLOPs"))
                flops, params = _complexity(model, inputs)
            for rt in runtimes:
                extra = [v for v, plain in ((rt.backend, "pytorch"), (rt.precision, "fp32")) if v != plain]
                where = f"{spec.label} @ {scale}" + (f" ({', '.join(extra)})" if extra else "")
                timing, threads = _time_model(rt.model, batches, opts, device, where, progress, rt.autocast)
                metrics: dict = dict.fromkeys(METRIC_KEYS)
                if evaluator_cfg is not None:
                    progress(ProgressEvent("stage", f"{where}: evaluating"))
                    metrics = subset_metrics(runner, evaluator_cfg, images.metainfo, batches, timing.outputs)

                point = BenchPoint(model=spec.label, config=spec.config,
                                   checkpoint=str(spec.checkpoint) if spec.checkpoint else None, scale=scale,
                                   input_hw=f"{inputs.shape[-2]}x{inputs.shape[-1]}", num_images=n, metrics=metrics,
                                   latency=LatencyStats.from_samples(timing.samples_ms), warmup_iters=timing.warmup,
                                   cpu_ms=statistics.median(timing.cpu_ms), cpu_util=timing.cpu_util,
                                   load_ms=statistics.median(images.load_ms),
                                   transform_ms=statistics.median(transform_ms), params=params, flops=flops,
                                   device=device, threads=threads, fuse_conv_bn=opts.fuse_conv_bn,
                                   backend=rt.backend, precision=rt.precision)
                points.append(point)
                if on_point is not None:
                    on_point(point)
    return points


def _time_model(model: Any, batches: list, opts: BenchOptions, device: str, where: str,
                progress: ProgressFn, autocast: Any = None) -> tuple:
    """Time ``data_preprocessor`` + ``predict`` per image (any backend's model; the network under ``autocast``, a
    torch dtype, when given); (Timing, threads used)."""
    import torch

    kind = torch.device(device).type

    def step(i: int) -> list:
        data = model.data_preprocessor(batches[i], False)
        with torch.autocast(kind, dtype=autocast, enabled=autocast is not None):
            found = [sample.pred_instances for sample in model(**data, mode="predict")]
        if autocast is not None:  # the evaluator reads them as numpy: float32
            for pred in found:
                pred.bboxes, pred.scores = pred.bboxes.float(), pred.scores.float()
        return found

    def report(done: int, total: int) -> None:
        progress(ProgressEvent("stage", f"{where}: timing", done, total))

    with torch.no_grad():
        timing = time_steps(step, len(batches), warmup=opts.warmup, min_iters=opts.min_iters, device=device,
                            on_iter=report)
    backend = getattr(model, "backend", None)  # ONNX Runtime's intra-op / OpenVINO's threads, else torch's
    return timing, int(backend.threads if backend is not None else torch.get_num_threads())


def run_speed_accuracy(opts: BenchOptions, progress: ProgressFn = no_progress,
                       on_point: Optional[PointFn] = None) -> BenchResult:
    """Measure every (model, scale) point; write results.csv, results.json and speed_accuracy.png."""
    import torch

    from fltool.engine import compat

    start = time.time()
    compat.apply()
    if opts.num_images < 1 or opts.warmup < 0 or opts.min_iters < 1:
        raise ConfigError("--num-images and --min-iters must be at least 1 and --warmup at least 0")
    if opts.threads is not None and opts.threads < 1:
        raise ConfigError(f"--threads {opts.threads} is not a thread count", "give 1 or more")
    backends = parse_backends(opts.backends, BENCH_BACKENDS)
    for name in ("onnxruntime", "openvino"):
        if name in backends and opts.device != "cpu":
            raise ConfigError(f"--backend {name} runs on the CPU here, not on {opts.device}", "use --device cpu")
    precisions = parse_bench_precisions(opts.precisions)
    if "int8" in precisions and "openvino" in backends:
        from fltool.deploy.quantize import check_int8_options
        from fltool.engine.backends import require_openvino

        require_openvino("--precision int8", int8=True)
        check_int8_options(opts.calib_images, 1.0)
    device = check_device(opts.device)
    specs = pair_models(opts.configs, opts.checkpoints)
    scales = parse_scales(opts.scales) if opts.scales else None
    run_opts = copy.copy(opts)
    run_opts.scales = scales
    run_opts.backends = backends
    run_opts.precisions = precisions
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
    notes += backend_notes(points) + timing_notes(points)

    import mmdet
    import mmengine

    environment = dict(device=device, device_name=device_name(device), threads=threads, batch_size=1,
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
