"""``fltool train``: MMEngine's Runner with fltool's checks, progress reporting, metrics file and clean stops."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from fltool.engine import compat, tracking
from fltool.engine import runner as rn
from fltool.engine.config import load_config
from fltool.engine.datacheck import check_training_data
from fltool.engine.doctor import machine_facts
from fltool.engine.metrics import coco_metrics, has_bbox_metrics, no_detection_metrics
from fltool.engine.progress_hook import progress_hook
from fltool.engine.schedule import apply_length_overrides
from fltool.engine.signals import StopFlag
from fltool.errors import ConfigError, Interrupted
from fltool.fileio import write_json
from fltool.progress import ProgressEvent, ProgressFn, no_progress

DEFAULT_CONFIG = "retinanet_r18-gn_synth_256"


@dataclass
class TrainOptions:
    config: Optional[str] = DEFAULT_CONFIG  # with ``data``: the recipe (None: datasource.DEFAULT_RECIPE)
    work_dir: Optional[Path] = None
    cfg_options: Union[Sequence[str], dict, None] = None
    resume: Optional[str] = None  # None, "auto" or a checkpoint path
    load_from: Union[str, Path, None] = None  # a file, zoo name or URL: a whole detector to start from
    pretrained: Optional[str] = None  # a file, torchvision://NAME or open-mmlab://NAME: the backbone's init
    data: Any = None  # fltool.engine.datasource.DataOptions: train on this dataset (--data)
    amp: bool = False  # = precision "fp16" on a GPU (MMEngine's AmpOptimWrapper)
    precision: str = "fp32"  # "auto" | "fp32" | "bf16" | "fp16" (fltool.engine.precision)
    launcher: str = "none"
    seed: Optional[int] = None
    deterministic: bool = False
    max_iters: Optional[int] = None
    max_epochs: Optional[int] = None
    val_interval: Optional[int] = None
    data_check: str = "check"  # "check" (stop on errors), "skip", "drop" (drop bad records, say how many)
    tensorboard: bool = False  # the same as track=("tensorboard",)
    trust_checkpoint: bool = False
    track: Sequence[str] = ()  # experiment trackers: tensorboard, mlflow, wandb, dvclive (fltool.engine.tracking)
    track_group: Any = None  # fltool.engine.tracking.TrackGroup: the sweep or tune this run belongs to


@dataclass
class TrainResult:
    work_dir: Path
    metrics: dict
    metrics_file: Optional[Path]
    checkpoint: Optional[Path]
    iterations: int
    wall_s: float
    notes: list = field(default_factory=list)
    config: str = ""  # the config that ran (with --data: the one written into the work dir)
    trained_iters: Optional[int] = None  # iterations this command trained (fewer than `iterations` when resumed)


# --------------------------------------------------------------------------------------------------------------


def prepare_train_config(opts: TrainOptions, progress: ProgressFn = no_progress) -> Any:
    """Load the config and apply every command-line choice to it; returns the Config the Runner will get."""
    compat.apply()
    cfg = load_config(opts.config, opts.cfg_options, opts.work_dir)
    apply_length_overrides(cfg, opts.max_iters, opts.max_epochs, opts.val_interval)
    if opts.seed is not None or opts.deterministic:
        randomness = dict(cfg.get("randomness") or {})
        if opts.seed is not None:
            randomness["seed"] = opts.seed
        randomness["deterministic"] = bool(opts.deterministic)
        cfg.randomness = randomness
    _set_precision(cfg, opts, progress)
    if opts.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif opts.resume:
        if not Path(opts.resume).is_file():
            raise ConfigError(f"--resume checkpoint not found: {opts.resume}", "give a .pth file, or --resume auto")
        cfg.resume, cfg.load_from = True, str(opts.resume)
    elif opts.load_from:
        cfg.load_from = str(opts.load_from)
    if opts.pretrained:
        from fltool.engine.weights import set_backbone_init

        set_backbone_init(cfg, str(opts.pretrained), opts.trust_checkpoint)
    cfg.launcher = opts.launcher
    if opts.launcher != "none":
        compat.distributed_cfg_overrides(cfg)
    trackers = tracking.parse_track(opts.track, opts.tensorboard)
    if trackers:
        tracking.configure(cfg, trackers, Path(cfg.work_dir), opts.track_group)
    rn.resolve_embedded_dataset(cfg, progress)
    note = rn.hardening_note(rn.harden(cfg))
    if note:
        progress(ProgressEvent("note", note))
    rn.check_data_paths(cfg, ("train", "val"))
    from fltool.engine.datasource import check_class_names, config_classes

    check_class_names(config_classes(cfg), f"config {Path(cfg.filename).name if cfg.filename else ''}".strip())
    return cfg


def _set_precision(cfg: Any, opts: TrainOptions, progress: ProgressFn) -> None:
    """``--precision`` (``--amp`` = fp16 on a GPU), chosen by what the machine has (:mod:`fltool.engine.precision`),
    set in the config and recorded there as ``fltool_precision`` (metrics.json's ``machine`` repeats it)."""
    import torch

    from fltool.engine.precision import training_precision

    if opts.amp and not torch.cuda.is_available():
        raise ConfigError("--amp needs a CUDA GPU and none is available", "train without --amp on the CPU")
    precision = training_precision(cfg, "fp16" if opts.amp else opts.precision,
                                   "cuda" if torch.cuda.is_available() else "cpu")
    cfg.fltool_precision = dict(name=precision.name, reason=precision.reason)
    if precision.mixed or opts.precision == "auto":
        progress(ProgressEvent("note", f"precision: {precision.reason}"))


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "n/a"


def _finished_run_metrics(work_dir: Path, iteration: int) -> Optional[tuple[Path, dict]]:
    """The work dir's metrics.json if it holds the evaluation of iteration ``iteration``, else None."""
    import json

    path = work_dir.resolve() / "metrics.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("iteration") != iteration or not data.get("bbox"):
        return None
    return path, data


def plan_work_dir(opts: TrainOptions) -> tuple[Path, list[str]]:
    """The work dir this run trains into, and a note where it is not the one asked for.

    A work dir that holds a run (:func:`fltool.engine.runlock.holds_run`) is continued with ``--resume``; without
    it, a work dir the user named (``--work-dir``, or the config's ``work_dir``) is refused, and fltool's default
    (``work_dirs/<config name>``) moves on to the next free ``<name>_2``, ``_3``... Nothing is overwritten.
    """
    from fltool.engine.config import resolve_config
    from fltool.engine.runlock import holds_run, next_free, run_files

    if opts.work_dir is not None:
        work_dir, named = Path(opts.work_dir), True
    elif opts.data is not None:
        from fltool.engine.datasource import DEFAULT_RECIPE, generated_name

        work_dir, named = Path("work_dirs") / generated_name(opts.config or DEFAULT_RECIPE, opts.data.path), False
    else:
        work_dir = Path(load_config(opts.config, opts.cfg_options).work_dir)
        named = work_dir != Path("work_dirs") / resolve_config(opts.config).stem
    if opts.resume or not holds_run(work_dir):
        return work_dir, []
    if named:
        found = ", ".join(run_files(work_dir)[:3])
        raise ConfigError(f"work dir {work_dir} already holds a run ({found}); fltool train does not overwrite it",
                          "continue it with --resume auto, or give another --work-dir")
    free = next_free(work_dir)
    return free, [f"{work_dir} holds an earlier run, kept as it is: this run trains in {free} (--resume auto "
                  "continues the earlier one; --work-dir names the folder)"]


def train(opts: TrainOptions, progress: ProgressFn = no_progress) -> TrainResult:
    """Train (and evaluate at the end) as the config says; returns the final metrics and where things are.

    The run has its work dir to itself (:func:`plan_work_dir`, :func:`fltool.engine.runlock.work_dir_lock`)."""
    from mmengine.dist import is_main_process

    from fltool.engine.runlock import work_dir_lock

    start = time.time()
    if opts.launcher != "none":
        compat.init_distributed(opts.launcher)
    progress(ProgressEvent("stage", "loading config"))
    work_dir, notes = plan_work_dir(opts)
    with work_dir_lock(work_dir, enabled=is_main_process()) as lock_notes:
        for note in notes + lock_notes:
            progress(ProgressEvent("note", note))
        return _train_in(replace(opts, work_dir=work_dir), progress, start)


def _train_in(opts: TrainOptions, progress: ProgressFn, start: float) -> TrainResult:
    """:func:`train` in its work dir, once that is settled and locked."""
    if opts.data is not None:  # --data: the recipe + the dataset, written out as the config to run
        from fltool.engine.datasource import training_config

        generated = training_config(opts.config, opts.data, opts.work_dir, opts.cfg_options, opts.data_check,
                                    progress, opts.max_iters)
        for note in generated.notes:
            progress(ProgressEvent("note", note))
        opts = replace(opts, config=str(generated.path), cfg_options=None, work_dir=generated.work_dir, data=None)
    cfg = prepare_train_config(opts, progress)
    notes = check_training_data(cfg, opts.data_check, progress)
    Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
    with rn.captured_stdout(rn.stdout_log(cfg)):
        runner, sink = _run_training(cfg, opts, progress)
        if not sink.get("trained") and "raw" not in sink:
            kept = _kept_results(runner, cfg, notes, opts, start)
            if kept is not None:
                return kept
    return _results(runner, cfg, sink, notes, opts, start)


def _run_training(cfg: Any, opts: TrainOptions, progress: ProgressFn) -> tuple[Any, dict]:
    """Build MMEngine's Runner with fltool's hooks (progress, clean stop on a signal) and train it; returns the
    runner and what the progress hook kept (``trained`` iterations, the last evaluation's ``raw`` metrics)."""
    from fltool.engine.checkpoint import trusted
    from fltool.engine.weights import describe_start
    from fltool_plugins.hooks import StopRequestHook, TrainingStopped

    progress(ProgressEvent("stage", "building model and data"))
    stop, sink = StopFlag(), {}
    runner = rn.build_runner(cfg)
    rn.quiet_console_logging(runner)
    for note in describe_start(runner.model, cfg, opts.trust_checkpoint):
        progress(ProgressEvent("note", note))
    runner.register_hook(progress_hook(progress, sink))
    runner.register_hook(StopRequestHook(stop))
    if tracking.parse_track(opts.track, opts.tensorboard):
        runner.register_hook(tracking.tracking_hook(tracking.changed_params(opts, opts.track_group)))
    stop.install()
    try:
        with rn.translate_errors(), contextlib.ExitStack() as trust:
            if opts.trust_checkpoint:
                trust.enter_context(trusted(cfg.load_from))
                trust.enter_context(trusted(opts.pretrained))
            runner.train()
    except BaseException as exc:  # MMEngine's after_run never comes: end the trackers' runs, files complete
        stopped = isinstance(exc, (TrainingStopped, KeyboardInterrupt))
        tracking.close_trackers(runner, getattr(exc, "track_status", "KILLED" if stopped else "FAILED"))
        if not isinstance(exc, TrainingStopped):
            raise
        raise Interrupted(f"{exc}; checkpoint saved: {exc.checkpoint}", exc.signum,
                          f"continue with: fltool train {opts.config} --resume auto --work-dir {cfg.work_dir}") \
            from None
    finally:
        stop.restore()
    return runner, sink


def _kept_results(runner: Any, cfg: Any, notes: list, opts: TrainOptions, start: float) -> Optional[TrainResult]:
    """A run resumed at its end trained nothing: its results as they are (None where it has none; then its last
    checkpoint is evaluated now, e.g. it stopped between that checkpoint and its evaluation)."""
    from mmengine.dist import is_main_process

    kept = _finished_run_metrics(Path(cfg.work_dir), runner.iter)
    if kept is not None:
        metrics_file, data = kept
        metrics = dict(data["bbox"], **({"per_class_AP": data["per_class_AP"]} if data.get("per_class_AP") else {}))
        notes.append(f"nothing left to train: the run finished at iteration {runner.iter}; its results are kept "
                     f"unchanged ({metrics_file}, AP {_fmt(metrics.get('AP'))})")
        last = data.get("checkpoint") or runner.message_hub.get_info("last_ckpt")
        return TrainResult(Path(cfg.work_dir).resolve(), metrics, metrics_file if is_main_process() else None,
                           Path(last) if last else None, int(runner.iter), time.time() - start, notes,
                           str(opts.config), trained_iters=0)
    if runner.val_loop is not None:
        notes.append(f"nothing left to train: the run finished at iteration {runner.iter}; evaluated its last "
                     "checkpoint")
        with rn.translate_errors():
            runner.val_loop.run()
    return None


def _results(runner: Any, cfg: Any, sink: dict, notes: list, opts: TrainOptions, start: float) -> TrainResult:
    """The final metrics (written to ``metrics.json`` by the main process) and where everything is."""
    from mmengine.dist import is_main_process

    metrics = coco_metrics(sink.get("raw", {}))
    if "raw" in sink and not has_bbox_metrics(sink["raw"]):
        metrics = no_detection_metrics(rn.dataset_paths(cfg, "val")[0])
        notes.append(f"no detections on the val split at iteration {sink.get('iteration')} (none scored above "
                     f"model.test_cfg.score_thr): AP is 0")
    last = runner.message_hub.get_info("last_ckpt")
    metrics_file = None
    if is_main_process():
        metrics_file = Path(cfg.work_dir).resolve() / "metrics.json"
        write_json(metrics_file, {
            "config": str(opts.config), "work_dir": str(cfg.work_dir), "iteration": sink.get("iteration"),
            "checkpoint": last, "bbox": {k: v for k, v in metrics.items() if k != "per_class_AP"},
            "per_class_AP": metrics.get("per_class_AP", {}), "raw": sink.get("raw", {}),
            "val_ann_file": str(rn.dataset_paths(cfg, "val")[0]), "wall_s": round(time.time() - start, 1),
            "machine": dict(machine_facts(), precision=(cfg.get("fltool_precision") or {}).get("name", "fp32"),
                            precision_reason=(cfg.get("fltool_precision") or {}).get("reason")),
        })
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        notes.append(f"metrics {bad} are not finite (no detections?)")
    return TrainResult(Path(cfg.work_dir).resolve(), metrics, metrics_file, Path(last) if last else None,
                       int(runner.iter), time.time() - start, notes, str(opts.config),
                       trained_iters=int(sink.get("trained", 0)))
