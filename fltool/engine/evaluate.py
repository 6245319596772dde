"""``fltool eval``: COCO bbox metrics of a checkpoint, on the config's test set or on the user's own COCO data."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from fltool.engine import compat
from fltool.engine import runner as rn
from fltool.engine.backends import (
    EXPORTED_BACKENDS,
    Exporter,
    check_backend,
    check_checkpoint_for,
    onnx_file_for,
    onnxruntime_model,
    openvino_model,
    openvino_run_precision,
)
from fltool.engine.checkpoint import checkpoint_state_dict
from fltool.engine.config import load_config
from fltool.engine.metrics import coco_metrics, has_bbox_metrics, no_detection_metrics
from fltool.errors import CheckpointError, ConfigError, DataError
from fltool.progress import ProgressEvent, ProgressFn, no_progress


@dataclass
class EvalOptions:
    config: Any  # a config file or shipped config's name, or an mmengine Config already read (fltool.engine.config)
    checkpoint: Path
    work_dir: Optional[Path] = None
    cfg_options: Union[Sequence[str], dict, None] = None
    ann_file: Optional[Path] = None
    img_dir: Optional[Path] = None
    per_class: bool = False
    show_dir: Optional[Path] = None
    score_thr: float = 0.3
    num_images: Optional[int] = None
    trust_checkpoint: bool = False
    launcher: str = "none"
    backend: str = "pytorch"  # or "onnxruntime"/"openvino": an exported file, or a .pth exported first (backends)
    precision: str = "fp32"  # "auto" | "fp32" | "bf16" | "fp16": the model under autocast (fltool.engine.precision);
    # with openvino its inference precision (bf16 only where the CPU has it natively: openvino_precision)


@dataclass
class EvalResult:
    metrics: dict
    raw: dict
    num_images: int
    ann_file: str
    checkpoint: str
    wall_s: float
    show_dir: Optional[Path] = None
    notes: list = field(default_factory=list)
    img_dir: Optional[Path] = None  # the test images' folder (the analyses draw them)


def _point_test_set_at(cfg: Any, ann_file: Path, img_dir: Optional[Path]) -> None:
    """Evaluate on the user's own COCO data: annotation file + image folder replace the config's test set."""
    from fltool.data.check import check_coco, default_img_dir, load_coco_json

    if not ann_file.is_file():
        raise DataError(f"annotation file not found: {ann_file}", "give a COCO-format .json with --ann-file")
    img_dir = img_dir or default_img_dir(ann_file)
    if not img_dir.is_dir():
        raise DataError(f"image folder not found: {img_dir}", "give the folder of the images with --img-dir")
    report = check_coco(ann_file, img_dir)  # the user's own data: check it before MMDetection trips over it
    if not report.ok:
        raise DataError(report.summary(), f"run `fltool data check {ann_file} --img-dir {img_dir}` for the details")
    data, _ = load_coco_json(ann_file)
    names = [c["name"] for c in sorted(data.get("categories", []), key=lambda c: c["id"])]
    dataset = cfg.test_dataloader.dataset
    classes = list((dataset.get("metainfo") or {}).get("classes") or [])
    if classes and names and not set(classes) <= set(names):
        raise DataError(f"{ann_file} has categories {names}, the model was trained on {classes}",
                        "use annotations whose category names include the model's classes")
    if not classes:
        dataset["metainfo"] = dict(classes=tuple(names))
    dataset["data_root"] = ""
    dataset["ann_file"] = str(ann_file.resolve())
    dataset["data_prefix"] = dict(img=str(img_dir.resolve()) + "/")
    evaluator = cfg.test_evaluator
    for ev in evaluator if isinstance(evaluator, list) else [evaluator]:
        ev["ann_file"] = str(ann_file.resolve())


def _set_precision(cfg: Any, requested: str, progress: ProgressFn) -> None:
    import torch

    from fltool.engine.precision import apply_evaluation_precision, choose_precision

    precision = choose_precision(requested, "cuda" if torch.cuda.is_available() else "cpu")
    apply_evaluation_precision(cfg, precision)
    if precision.mixed or requested == "auto":
        progress(ProgressEvent("note", f"precision: {precision.reason}"))


def prepare_eval_config(opts: EvalOptions, progress: ProgressFn = no_progress) -> Any:
    compat.apply()
    cfg = load_config(opts.config, opts.cfg_options, opts.work_dir)
    if cfg.get("test_dataloader") is None or cfg.get("test_evaluator") is None:
        name = Path(cfg.filename).name if cfg.filename else "given"
        raise ConfigError(f"config {name} has no test_dataloader/test_evaluator", "use a config with a test set")
    rn.resolve_embedded_dataset(cfg, progress)
    if opts.ann_file is not None:
        _point_test_set_at(cfg, Path(opts.ann_file), Path(opts.img_dir) if opts.img_dir else None)
    elif opts.img_dir is not None:
        raise ConfigError("--img-dir needs --ann-file", "give both to evaluate on your own COCO data")
    if opts.num_images:
        cfg.test_dataloader.dataset["indices"] = int(opts.num_images)
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    for ev in evaluators:
        if opts.per_class:
            ev["classwise"] = True
    if opts.show_dir is not None:
        hooks = cfg.setdefault("default_hooks", {})
        vis = hooks.get("visualization") or dict(type="DetVisualizationHook")
        vis.update(draw=True, test_out_dir=str(Path(opts.show_dir).resolve()), score_thr=opts.score_thr)
        hooks["visualization"] = vis
    cfg.load_from = None  # fltool loads (and checks) the weights itself
    cfg.resume = False
    cfg.launcher = opts.launcher
    _set_precision(cfg, "fp32" if opts.backend == "openvino" else opts.precision, progress)  # openvino: its own
    if opts.launcher != "none":
        compat.distributed_cfg_overrides(cfg)
    note = rn.hardening_note(rn.harden(cfg))
    if note:
        progress(ProgressEvent("note", note))
    rn.check_data_paths(cfg, ("test",))
    return cfg


def evaluate(opts: EvalOptions, progress: ProgressFn = no_progress, exporter: Optional[Exporter] = None
             ) -> EvalResult:
    """COCO metrics of ``opts.checkpoint`` on the config's test set (or ``opts.ann_file``); with the onnxruntime
    backend a ``.pth`` is written as ONNX by ``exporter`` first (the CLI hands in ``fltool export``'s)."""
    start = time.time()
    if opts.launcher != "none":
        compat.init_distributed(opts.launcher)
    ckpt = Path(opts.checkpoint)
    if not ckpt.is_file():
        raise CheckpointError(f"checkpoint not found: {ckpt}", "give the .pth file written by `fltool train`")
    progress(ProgressEvent("stage", "loading config"))
    cfg = prepare_eval_config(opts, progress)
    check_checkpoint_for(check_backend(opts.backend), ckpt)
    notes: list = []
    state = None
    if opts.backend in EXPORTED_BACKENDS:
        model_file = onnx_file_for(ckpt, exporter, backend=opts.backend, out_dir=Path(cfg.work_dir),
                                   config=opts.config, cfg_options=opts.cfg_options, trust=opts.trust_checkpoint,
                                   progress=progress, notes=notes)
        cfg.model = onnxruntime_model(cfg, model_file) if opts.backend == "onnxruntime" else \
            openvino_model(cfg, model_file, openvino_run_precision(opts.precision, model_file, notes))
    else:
        progress(ProgressEvent("stage", f"loading checkpoint {ckpt.name}"))
        compat.apply()
        state = checkpoint_state_dict(ckpt, trust=opts.trust_checkpoint)

    from fltool.engine.progress_hook import progress_hook

    sink: dict = {}
    with rn.captured_stdout(rn.stdout_log(cfg)):
        runner, _ = rn.built_runner_with_weights(cfg, state, str(ckpt))
        runner.register_hook(progress_hook(progress, sink))
        progress(ProgressEvent("stage", "evaluating"))
        with rn.translate_errors():
            raw = runner.test()
    raw = dict(raw or sink.get("raw", {}))
    ann, img_dir = rn.dataset_paths(cfg, "test")
    metrics = coco_metrics(raw)
    if not has_bbox_metrics(raw):
        metrics = no_detection_metrics(ann)
        notes.append("no detections (none scored above model.test_cfg.score_thr): AP is 0")
    return EvalResult(metrics, raw, len(runner.test_dataloader.dataset), str(ann), str(ckpt),
                      time.time() - start, Path(opts.show_dir) if opts.show_dir else None, notes, img_dir)
