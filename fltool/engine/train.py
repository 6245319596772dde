"""``fltool train``: MMEngine's Runner with fltool's checks, progress reporting, metrics file and clean stops."""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from fltool import compat
from fltool.engine import runner as rn
from fltool.engine.config import load_config
from fltool.engine.doctor import machine_facts
from fltool.engine.runner import ProgressEvent, ProgressFn
from fltool.errors import ConfigError, DataError, Interrupted
from fltool.fileio import write_json

DEFAULT_CONFIG = "retinanet_r18-gn_synth_256"
METRIC_NAMES = {"bbox_mAP": "AP", "bbox_mAP_50": "AP50", "bbox_mAP_75": "AP75", "bbox_mAP_s": "APs",
                "bbox_mAP_m": "APm", "bbox_mAP_l": "APl"}


@dataclass
class TrainOptions:
    config: Optional[str] = DEFAULT_CONFIG  # with ``data``: the recipe (None: datasource.DEFAULT_RECIPE)
    work_dir: Optional[Path] = None
    cfg_options: Union[Sequence[str], dict, None] = None
    resume: Optional[str] = None  # None, "auto" or a checkpoint path
    load_from: Union[str, Path, None] = None  # a file, zoo name or URL: a whole detector to start from
    pretrained: Optional[str] = None  # a file, torchvision://NAME or open-mmlab://NAME: the backbone's init
    data: Any = None  # fltool.engine.datasource.DataOptions: train on this dataset (--data)
    amp: bool = False
    launcher: str = "none"
    seed: Optional[int] = None
    deterministic: bool = False
    max_iters: Optional[int] = None
    max_epochs: Optional[int] = None
    val_interval: Optional[int] = None
    data_check: str = "check"  # "check" (stop on errors), "skip", "drop" (drop bad records, say how many)
    tensorboard: bool = False
    trust_checkpoint: bool = False


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
def coco_metrics(raw: dict) -> dict:
    """MMDetection's ``coco/bbox_mAP...`` keys to AP/AP50/AP75/APs/APm/APl (+ per-class AP when present)."""
    out: dict = {}
    per_class: dict = {}
    for key, value in raw.items():
        name = key.split("/", 1)[-1]
        if name in METRIC_NAMES:
            # COCO reports -1 where the split has no ground truth of that size: not a score, so None.
            out[METRIC_NAMES[name]] = float(value) if float(value) >= 0 else None
        elif name.endswith("_precision"):
            per_class[name[: -len("_precision")]] = float(value)
    if per_class:
        out["per_class_AP"] = per_class
    return out


def has_bbox_metrics(raw: dict) -> bool:
    return any(key.split("/", 1)[-1] == "bbox_mAP" for key in raw)


def no_detection_metrics(ann_file: Any) -> dict:
    """The COCO metrics of a model that detected nothing: 0 where the split has ground truth, None where it has none.

    MMDetection's CocoMetric logs "The testing results of the whole dataset is empty" and returns no numbers at
    all, which would read as n/a; pycocotools' own answer for no detections is AP 0 (and -1 for an empty size bin).
    """
    import json

    from fltool.data.check import MEDIUM_MAX_AREA, SMALL_MAX_AREA

    try:
        data = json.loads(Path(ann_file).read_text())
        areas = [float(a.get("area", 0.0)) for a in data.get("annotations", []) if not a.get("iscrowd", 0)]
    except (OSError, ValueError, TypeError, AttributeError):
        areas = []
    bins = {"APs": any(a < SMALL_MAX_AREA for a in areas),
            "APm": any(SMALL_MAX_AREA <= a < MEDIUM_MAX_AREA for a in areas),
            "APl": any(a >= MEDIUM_MAX_AREA for a in areas)}
    out = {key: (0.0 if areas else None) for key in ("AP", "AP50", "AP75")}
    out.update({key: (0.0 if present else None) for key, present in bins.items()})
    return out


def _scale_schedule(cfg: Any, old_len: int, new_len: int) -> None:
    """Scale iteration/epoch milestones of the LR schedule when the training length is overridden."""
    if not old_len or old_len == new_len:
        return
    ratio = new_len / old_len
    schedulers = cfg.get("param_scheduler") or []
    schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
    for sched in schedulers:
        if isinstance(sched.get("begin"), int) and sched["begin"] > 0:
            sched["begin"] = min(new_len - 1, round(sched["begin"] * ratio))
        for key in ("end", "T_max"):
            if isinstance(sched.get(key), int) and sched[key] > 0:
                sched[key] = max(1, min(new_len, round(sched[key] * ratio)))
        if "milestones" in sched:
            sched["milestones"] = [max(1, round(m * ratio)) for m in sched["milestones"]]


def apply_length_overrides(cfg: Any, max_iters: Optional[int], max_epochs: Optional[int],
                           val_interval: Optional[int]) -> None:
    train_cfg = cfg.get("train_cfg")
    if train_cfg is None:
        raise ConfigError("config has no train_cfg", "use a training config")
    by_epoch = "max_epochs" in train_cfg
    if max_iters is not None:
        if by_epoch:
            raise ConfigError("--max-iters given but the config trains by epochs", "use --max-epochs")
        _scale_schedule(cfg, train_cfg["max_iters"], max_iters)
        train_cfg["max_iters"] = max_iters
        if "val_interval" in train_cfg and train_cfg["val_interval"] > max_iters:
            train_cfg["val_interval"] = max_iters
    if max_epochs is not None:
        if not by_epoch:
            raise ConfigError("--max-epochs given but the config trains by iterations", "use --max-iters")
        _scale_schedule(cfg, train_cfg["max_epochs"], max_epochs)
        train_cfg["max_epochs"] = max_epochs
    if val_interval is not None:
        train_cfg["val_interval"] = val_interval
    length = train_cfg.get("max_iters") or train_cfg.get("max_epochs")
    ckpt = cfg.get("default_hooks", {}).get("checkpoint")
    if ckpt is not None and ckpt.get("interval", 1) > length:
        ckpt["interval"] = length


def prepare_train_config(opts: TrainOptions, progress: ProgressFn = rn._noop) -> Any:
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
    if opts.amp:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--amp needs a CUDA GPU and none is available", "train without --amp on the CPU")
        wrapper = cfg.optim_wrapper
        if wrapper.get("type", "OptimWrapper") == "OptimWrapper":
            wrapper["type"] = "AmpOptimWrapper"
            wrapper.setdefault("loss_scale", "dynamic")
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
    if opts.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package",
                              "install it: .venv/bin/python -m pip install tensorboard") from None
        vis = cfg.get("visualizer") or dict(type="DetLocalVisualizer", name="visualizer")
        backends = list(vis.get("vis_backends") or [dict(type="LocalVisBackend")])
        if not any(b.get("type") == "TensorboardVisBackend" for b in backends):
            backends.append(dict(type="TensorboardVisBackend"))
        vis["vis_backends"] = backends
        cfg.visualizer = vis
    rn.resolve_embedded_dataset(cfg, progress)
    rn.harden(cfg)
    rn.check_data_paths(cfg, ("train", "val"))
    from fltool.engine.datasource import check_class_names, config_classes

    check_class_names(config_classes(cfg), f"config {Path(cfg.filename).name if cfg.filename else ''}".strip())
    return cfg


def check_training_data(cfg: Any, mode: str, progress: ProgressFn = rn._noop) -> list[str]:
    """``fltool data check`` on the train/val sets before training. Returns notes (e.g. what was dropped)."""
    if mode == "skip":
        check_training_boxes(cfg)
        return ["data check skipped (--data-check skip)"]
    from fltool.data.check import check_coco, drop_bad_records

    notes = []
    for split in ("train", "val"):
        ann, img_dir = rn.dataset_paths(cfg, split)
        if ann is None:
            continue
        progress(ProgressEvent("stage", f"checking {split} data ({ann.name})"))
        report = check_coco(ann, img_dir)
        if report.ok:
            continue
        errors = [i for i in report.issues if i.severity == "error"]
        summary = ", ".join(i.label for i in errors)
        if mode != "drop":
            example = errors[0].examples[0] if errors and errors[0].examples else ""
            raise DataError(f"{split} data {ann} has errors: {summary}" + (f" (e.g. {example})" if example else ""),
                            f"run `fltool data check {ann}` for the full report; fix the data or rerun with "
                            "--data-check drop to train without the bad records")
        out = Path(cfg.work_dir) / "data" / f"{split}_checked.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        n_img, n_ann = drop_bad_records(ann, report, out)
        if n_img >= report.num_images:
            raise DataError(f"{split} data {ann}: every image has errors ({summary}), none is left to "
                            f"{'train' if split == 'train' else 'evaluate'} on",
                            f"run `fltool data check {ann}` for the full report and fix the data")
        dataset = rn.innermost_dataset(cfg, split)
        dataset["ann_file"] = str(out.resolve())
        dataset["data_root"] = ""
        dataset["data_prefix"] = dict(img=str(img_dir) + "/")
        if split == "val":
            for key in ("val_evaluator", "test_evaluator"):
                if isinstance(cfg.get(key), dict) and "ann_file" in cfg[key]:
                    cfg[key]["ann_file"] = str(out.resolve())
        notes.append(f"{split}: dropped {n_img} images and {n_ann} annotations with errors ({summary}); "
                     f"training reads {out}")
    check_training_boxes(cfg, "dropped with --data-check drop" if any("dropped" in n for n in notes) else "")
    return notes


def check_training_boxes(cfg: Any, dropped: str = "") -> None:
    """A DataError before training where MMDetection's training set would hold no image (its CocoDataset keeps an
    image with a box of the config's classes and both sides at least ``filter_cfg.min_size``); MMEngine would
    otherwise stop on ``need at least one array to concatenate``. Says why no image is left."""
    import json

    ann, _ = rn.dataset_paths(cfg, "train")
    dataset = rn.innermost_dataset(cfg, "train")
    if ann is None or "Coco" not in str(dataset.get("type", "")):
        return
    try:
        data = json.loads(ann.read_text())
        images = {img["id"]: img for img in data.get("images") or []}
        anns, categories = data.get("annotations") or [], data.get("categories") or []
        classes = set((dataset.get("metainfo") or {}).get("classes") or [c.get("name") for c in categories])
        cat_ids = {c["id"] for c in categories if c.get("name") in classes}
        with_box = {a["image_id"] for a in anns if a.get("category_id") in cat_ids}
        filter_cfg = dataset.get("filter_cfg") or {}
        min_size = filter_cfg.get("min_size", 0) or 0
        keep = [i for i in images if (i in with_box or not filter_cfg.get("filter_empty_gt"))
                and min(images[i].get("width", 0), images[i].get("height", 0)) >= min_size]
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return  # the data check and MMDetection name a malformed file better than this count could
    if keep:
        return
    if not anns:
        why = "it has no boxes (no annotations)"
    elif not with_box:
        why = f"none of its {len(anns)} boxes is of the classes {sorted(classes)[:5]}"
    else:
        why = (f"all {len(with_box)} images with boxes are smaller than filter_cfg.min_size = {min_size} px "
               "(MMDetection leaves them out)")
    raise DataError(f"no training image is left in {ann}: {why}" + (f" after what was {dropped}" if dropped else ""),
                    "give data with boxes of the model's classes (fltool data check shows what is there)"
                    + (", or lower train_dataloader.dataset.filter_cfg.min_size" if with_box else ""))


# --------------------------------------------------------------------------------------------------------------
class _StopFlag:
    """Set by SIGINT/SIGTERM; a second signal restores the default handler so it kills at once."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict = {}

    def __call__(self) -> int:
        return self.signum

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _make_progress_hook(progress: ProgressFn, sink: dict) -> Any:
    from mmengine.hooks import Hook

    class ProgressHook(Hook):
        """Reports iterations, losses, lr, positives and validation to ``progress``; keeps the last metrics."""

        priority = "LOW"

        def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                             outputs: Optional[dict] = None) -> None:
            values = {k: float(v.detach()) if hasattr(v, 'detach') else float(v) for k, v in (outputs or {}).items()}
            lrs = runner.optim_wrapper.get_lr().get("lr", [])
            if lrs:
                values["lr"] = float(lrs[0])
            hub = runner.message_hub
            for key in ("time", "data_time"):
                scalar = hub.log_scalars.get(f"train/{key}")
                if scalar is not None:
                    values[key] = float(scalar.current())
            sink["trained"] = sink.get("trained", 0) + 1
            progress(ProgressEvent("train_iter", iteration=runner.iter + 1, max_iters=runner.max_iters,
                                   epoch=runner.epoch, values=values))

        def after_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            progress(ProgressEvent("val_iter", iteration=batch_idx + 1,
                                   max_iters=len(runner.val_dataloader)))

        def after_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            progress(ProgressEvent("val_iter", iteration=batch_idx + 1,
                                   max_iters=len(runner.test_dataloader)))

        def after_val_epoch(self, runner: Any, metrics: Optional[dict] = None) -> None:
            sink["raw"] = dict(metrics or {})
            sink["iteration"] = runner.iter
            progress(ProgressEvent("val_end", iteration=runner.iter, values=coco_metrics(sink["raw"])))

        after_test_epoch = after_val_epoch

    return ProgressHook()


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


def train(opts: TrainOptions, progress: ProgressFn = rn._noop) -> TrainResult:
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

    progress(ProgressEvent("stage", "building model and data"))
    from fltool.engine.checkpoint import trusted

    stop = _StopFlag()
    sink: dict = {}
    with rn.captured_stdout(rn.stdout_log(cfg)):
        runner = rn.build_runner(cfg)
        rn.quiet_console_logging(runner)
        from fltool_plugins.hooks import StopRequestHook, TrainingStopped

        from fltool.engine.weights import describe_start

        for note in describe_start(runner.model, cfg, opts.trust_checkpoint):
            progress(ProgressEvent("note", note))
        runner.register_hook(_make_progress_hook(progress, sink))
        runner.register_hook(StopRequestHook(stop))
        stop.install()
        try:
            with rn.translate_errors(), contextlib.ExitStack() as trust:
                if opts.trust_checkpoint:
                    trust.enter_context(trusted(cfg.load_from))
                    trust.enter_context(trusted(opts.pretrained))
                runner.train()
        except TrainingStopped as exc:
            raise Interrupted(f"{exc}; checkpoint saved: {exc.checkpoint}", exc.signum,
                              f"continue with: fltool train {opts.config} --resume auto --work-dir {cfg.work_dir}") \
                from None
        finally:
            stop.restore()
        if not sink.get("trained") and "raw" not in sink:
            kept = _finished_run_metrics(Path(cfg.work_dir), runner.iter)
            if kept is not None:
                # Resumed at the end of a finished run: nothing ran, so its results stay as they are.
                metrics_file, data = kept
                metrics = dict(data["bbox"], **({"per_class_AP": data["per_class_AP"]}
                                                if data.get("per_class_AP") else {}))
                notes.append(f"nothing left to train: the run finished at iteration {runner.iter}; its results "
                             f"are kept unchanged ({metrics_file}, AP {_fmt(metrics.get('AP'))})")
                last = data.get("checkpoint") or runner.message_hub.get_info("last_ckpt")
                from mmengine.dist import is_main_process

                return TrainResult(Path(cfg.work_dir).resolve(), metrics, metrics_file if is_main_process() else None,
                                   Path(last) if last else None, int(runner.iter), time.time() - start, notes,
                                   str(opts.config), trained_iters=0)
            if runner.val_loop is not None:
                # No results to keep (e.g. stopped between the last checkpoint and its evaluation): evaluate now.
                notes.append(f"nothing left to train: the run finished at iteration {runner.iter}; evaluated its "
                             "last checkpoint")
                with rn.translate_errors():
                    runner.val_loop.run()

    metrics = coco_metrics(sink.get("raw", {}))
    if "raw" in sink and not has_bbox_metrics(sink["raw"]):
        val_ann = rn.dataset_paths(cfg, "val")[0]
        metrics = no_detection_metrics(val_ann)
        notes.append(f"no detections on the val split at iteration {sink.get('iteration')} (none scored above "
                     f"model.test_cfg.score_thr): AP is 0")
    last = runner.message_hub.get_info("last_ckpt")
    metrics_file = None
    from mmengine.dist import is_main_process

    if is_main_process():
        metrics_file = Path(cfg.work_dir).resolve() / "metrics.json"
        write_json(metrics_file, {
            "config": str(opts.config), "work_dir": str(cfg.work_dir), "iteration": sink.get("iteration"),
            "checkpoint": last, "bbox": {k: v for k, v in metrics.items() if k != "per_class_AP"},
            "per_class_AP": metrics.get("per_class_AP", {}), "raw": sink.get("raw", {}),
            "val_ann_file": str(rn.dataset_paths(cfg, "val")[0]), "wall_s": round(time.time() - start, 1),
            "machine": machine_facts(),
        })
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        notes.append(f"metrics {bad} are not finite (no detections?)")
    return TrainResult(Path(cfg.work_dir).resolve(), metrics, metrics_file, Path(last) if last else None,
                       int(runner.iter), time.time() - start, notes, str(opts.config),
                       trained_iters=int(sink.get("trained", 0)))
