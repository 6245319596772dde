"""``fltool export --format onnx``: a trained RetinaNet as one ONNX graph, with its metadata, checked
(``--format openvino``: that graph as an OpenVINO IR, :mod:`fltool.deploy.openvino_export`).

:func:`export_model` writes a built detector (weights loaded) to an ONNX file: the graph of
:mod:`fltool.deploy.graph` traced by ``torch.onnx.export`` (the TorchScript-based exporter: it carries the ONNX
``NonMaxSuppression`` node with its data-dependent output through ``autograd.Function.symbolic``), the metadata of
``fltool_plugins.models.deploy_meta`` added, then ``onnx.checker`` (full check, with shape inference).
:func:`export_onnx` is the command: it finds the run's config and checkpoint, loads every weight strictly, exports,
and (unless told not to) checks the file against the PyTorch model on the val split (:mod:`fltool.deploy.parity`).
"""
from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from fltool.errors import ConfigError, StackError
from fltool.fileio import write_json
from fltool.progress import ProgressEvent, ProgressFn, no_progress

#: NonMaxSuppression and TopK with a computed k need opset 11; the TorchScript exporter stops at 20.
MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 11, 20, 17
FORMATS = ("onnx", "openvino")
#: ``--precision`` of ``--format openvino``: fp32 is the IR itself (always written and checked); bf16 is evaluated
#: where the CPU has native bf16 (a runtime setting, no file of its own); int8 writes a quantized IR beside it.
EXPORT_PRECISIONS = ("fp32", "bf16", "int8")
_RESIZE_TYPES = ("Resize", "mmdet.Resize")


@dataclass
class ExportOptions:
    target: Path  # a checkpoint (.pth) or the work dir fltool train wrote
    out: Optional[Path] = None  # default: next to the checkpoint, <checkpoint stem>.onnx
    img_size: Optional[Sequence[int]] = None  # fixed (H, W); None: any size (dynamic H and W)
    opset: int = DEFAULT_OPSET
    config: Optional[str] = None  # default: the config of the run (its work dir's dump, or the checkpoint's meta)
    cfg_options: Union[Sequence[str], dict, None] = None
    check: bool = True  # compare with PyTorch on the val split
    check_images: Optional[int] = None  # the first N val images; None: all
    format: str = "onnx"  # or "openvino"
    trust_checkpoint: bool = False
    # --format openvino only (fltool.deploy.openvino_export, fltool.deploy.quantize):
    precision: Union[str, Sequence[str]] = "fp32"  # of EXPORT_PRECISIONS, comma-separated or a list
    calib_images: int = 100  # INT8: training images to calibrate on
    max_ap_drop: float = 1.0  # INT8: the most AP (points, on the val split) the quantized model may lose


@dataclass
class ExportResult:
    model_file: Path  # the .onnx file, or the IR's .xml (its .bin beside it)
    config: Optional[Path]  # None: the config stored in the checkpoint
    checkpoint: Path
    meta: Any  # DeployMeta
    size_bytes: int
    export_s: float
    check: Any = None  # ParityReport, or None with --no-check
    notes: list = field(default_factory=list)
    format: str = "onnx"
    precisions: dict = field(default_factory=dict)  # openvino: name -> {file, metrics (AP...), note}
    int8_error: Optional[str] = None  # openvino --precision int8 asked for and not kept: why

    @property
    def onnx_file(self) -> Path:
        """The written model file (its name from before --format openvino: an .onnx, or the IR's .xml)."""
        return self.model_file

    @property
    def report_file(self) -> Path:
        """The JSON beside the model file: metadata and check results."""
        return self.model_file.with_suffix(".json")


def _test_resize(cfg: Any) -> dict:
    """The test pipeline's Resize (scale as [w, h], keep_ratio)."""
    pipeline = (cfg.get("test_dataloader") or {}).get("dataset", {}).get("pipeline") or cfg.get("test_pipeline") or []
    for step in pipeline:
        if step.get("type") in _RESIZE_TYPES:
            scale = step.get("scale")
            scale = [int(scale), int(scale)] if isinstance(scale, (int, float)) else [int(v) for v in scale]
            return {"scale": scale, "keep_ratio": bool(step.get("keep_ratio", False))}
    raise ConfigError("the config's test pipeline has no Resize", "export a config whose test pipeline resizes "
                                                                   "its images (Load -> Resize -> ... -> Pack)")


def deploy_meta(cfg: Any, model: Any, post: Any, classes: Sequence[str], img_size: Optional[Sequence[int]],
                source: dict, thresholds: Optional[dict] = None) -> Any:
    """The metadata a consumer needs: classes, input, preprocessing (from the config), post-processing, and the
    run's chosen score thresholds where it has them."""
    from fltool_plugins.models import DeployMeta

    prep = model.data_preprocessor
    mean = [float(v) for v in prep.mean.flatten()] if getattr(prep, "_enable_normalize", False) else [0.0] * 3
    std = [float(v) for v in prep.std.flatten()] if getattr(prep, "_enable_normalize", False) else [1.0] * 3
    resize = _test_resize(cfg)
    fixed = [int(img_size[0]), int(img_size[1])] if img_size else None
    if fixed:
        resize = {"scale": [fixed[1], fixed[0]], "keep_ratio": resize["keep_ratio"]}
    pad = int(getattr(prep, "pad_size_divisor", 1))
    preprocess = {
        "pixel_range": "0-255, as decoded",
        "resize": resize,
        "bgr_to_rgb": bool(getattr(prep, "_channel_conversion", False)),
        "input_channels": "RGB" if getattr(prep, "_channel_conversion", False) else "BGR (as OpenCV decodes)",
        "mean": mean, "std": std,
        "size_divisor": pad, "pad_value": float(getattr(prep, "pad_value", 0)),
        "padding": ("pad bottom/right with pad_value to the fixed input size, after normalising" if fixed else
                    f"none needed: the graph pads to a multiple of {pad} itself"),
        "order": "resize (MMDetection Resize rules) -> channel order -> (x - mean) / std -> CHW float32",
    }
    outputs = {"boxes": "(N, 4) float32, x1 y1 x2 y2 in input pixels (divide by the resize factor for the original "
                        "image)",
               "scores": "(N,) float32 sigmoid class score, descending", "labels": "(N,) int64 index into classes"}
    inputs = {"name": "image", "layout": "NCHW", "dtype": "float32", "batch": 1, "fixed_hw": fixed}
    return DeployMeta(classes=list(classes), input=inputs, preprocess=preprocess, postprocess=asdict(post),
                      outputs=outputs, source=source, thresholds=thresholds)


def exportable(model: Any) -> Any:
    """The traceable wrapper of a built detector, or a ConfigError naming what is not supported."""
    from fltool.deploy.graph import ExportableRetinaNet, PostProcess

    head = getattr(model, "bbox_head", None)
    if head is None or not all(hasattr(head, a) for a in ("prior_generator", "bbox_coder")) \
            or not hasattr(model, "extract_feat"):
        raise ConfigError(f"fltool export supports single-stage anchor detectors (RetinaNet); "
                          f"{type(model).__name__} is not one")
    try:
        post = PostProcess.from_test_cfg(head.test_cfg)
        wrapper = ExportableRetinaNet(model, post, getattr(model.data_preprocessor, "pad_size_divisor", 1))
    except ValueError as exc:
        raise ConfigError(f"cannot export this model: {exc}") from None
    return wrapper.eval()


def export_model(model: Any, cfg: Any, out: Path, *, classes: Sequence[str], img_size: Optional[Sequence[int]] = None,
                 opset: int = DEFAULT_OPSET, source: Optional[dict] = None, thresholds: Optional[dict] = None) -> Any:
    """Write ``model`` (an MMDetection RetinaNet with its weights) to ``out`` as one ONNX graph; returns the
    metadata written into it. Fixed input ``img_size`` (H, W), or any size when None."""
    import torch

    try:
        import onnx
    except ImportError:
        raise StackError("the onnx package is not installed", "rerun scripts/setup.sh (pip install onnx)") from None
    from fltool.about import VERSION as __version__
    from fltool.deploy.graph import INPUT_NAME, OUTPUT_NAMES

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"--opset {opset} is out of range", f"use {MIN_OPSET}..{MAX_OPSET} (default "
                                                               f"{DEFAULT_OPSET})")
    if img_size is not None and (len(img_size) != 2 or min(img_size) < 32):
        raise ConfigError(f"--img-size {' '.join(map(str, img_size))} is not a height and width of 32 px or more",
                          "give two numbers, e.g. --img-size 256 256")
    if img_size is not None:
        from fltool.engine.datasource import check_input_size

        check_input_size(img_size, f"--img-size {' '.join(map(str, img_size))}")
    wrapper = exportable(model.cpu().float().eval())
    if img_size is None:
        w, h = _test_resize(cfg)["scale"]  # any size traces the same graph; the config's is a natural one
        example_hw = (h, w)
    else:
        example_hw = (int(img_size[0]), int(img_size[1]))
    example = torch.zeros(1, 3, *example_hw)
    dynamic = {name: {0: "num_detections"} for name in OUTPUT_NAMES}
    if img_size is None:
        dynamic[INPUT_NAME] = {2: "height", 3: "width"}
    meta = deploy_meta(cfg, model, wrapper.post, classes, img_size,
                       dict(source or {}, opset=opset, fltool=__version__, torch=torch.__version__,
                            exporter="torch.onnx.export (TorchScript-based)"), thresholds)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "graph.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            # the tracer's notes on Python-side checks (sizes, asserts) and the exporter's deprecation notice
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=UserWarning)
            try:
                torch.onnx.export(wrapper, (example,), str(raw), dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
                                  do_constant_folding=True)
            except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; say which in one line
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise ConfigError(f"torch.onnx.export failed: {type(exc).__name__}: {first}",
                                  "rerun with FLTOOL_DEBUG=1 for the traceback") from None
        graph = onnx.load(str(raw))
        for key, value in meta.to_props().items():
            graph.metadata_props.add(key=key, value=value)
        graph.doc_string = (f"RetinaNet exported by fltool {__version__}: image -> boxes, scores, labels "
                            f"(see the fltool.* metadata)")
        try:
            onnx.checker.check_model(graph, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise StackError(f"the exported graph fails onnx.checker: {str(exc).splitlines()[0][:200]}",
                             "this is a bug in fltool's export; report it with the config") from None
        onnx.save(graph, str(raw))
        raw.replace(out)
    return meta


@dataclass
class ExportJob:
    """What every format's export starts from: the run, its test config, its weights and where the file goes."""

    run: Any  # fltool.engine.workdir.RunFiles
    cfg: Any
    state: dict
    classes: tuple
    out: Path
    logs: Path  # MMEngine's logs of the check
    notes: list
    thresholds: Optional[dict] = None  # the run's chosen score thresholds, for the metadata


def prepare_export(opts: ExportOptions, progress: ProgressFn = no_progress, suffix: str = ".onnx") -> ExportJob:
    """Check the options, find the run, load its config (the check's test set) and its weights."""
    from fltool.engine import compat
    from fltool.engine.checkpoint import checkpoint_state_dict
    from fltool.engine.evaluate import EvalOptions, prepare_eval_config
    from fltool.engine.workdir import checkpoint_classes, resolve_run

    compat.apply()
    if opts.format not in FORMATS:
        raise ConfigError(f"--format {opts.format} is not supported", f"use one of: {', '.join(FORMATS)}")
    if opts.check_images is not None and opts.check_images < 1:
        raise ConfigError("--check-images must be at least 1")
    run = resolve_run(Path(opts.target), opts.config, trust=opts.trust_checkpoint)
    notes: list = []
    if run.config_source == "checkpoint meta":
        notes.append(f"config taken from {run.checkpoint.name}'s metadata (no config beside it)")
    out = Path(opts.out) if opts.out else run.checkpoint.with_suffix(suffix)
    if out.suffix != suffix:
        raise ConfigError(f"--out {out} does not end in {suffix}", f"name the output file <something>{suffix}")

    progress(ProgressEvent("stage", "loading config"))
    logs = Path(tempfile.mkdtemp(prefix="fltool-export-"))
    cfg = prepare_eval_config(EvalOptions(config=run.config_spec, checkpoint=run.checkpoint, work_dir=logs,
                                          cfg_options=opts.cfg_options, num_images=opts.check_images), progress)
    if opts.img_size is not None:  # the check runs the images at the size the file takes
        _set_test_scale(cfg, (int(opts.img_size[1]), int(opts.img_size[0])))
    progress(ProgressEvent("stage", f"loading checkpoint {run.checkpoint.name}"))
    state = checkpoint_state_dict(run.checkpoint, trust=opts.trust_checkpoint)
    classes = checkpoint_classes(run.checkpoint, trust=opts.trust_checkpoint) or \
        tuple((cfg.test_dataloader.dataset.get("metainfo") or {}).get("classes") or ())
    return ExportJob(run, cfg, state, tuple(classes), out, logs, notes, _run_thresholds(run.checkpoint, notes))


def built_model(job: ExportJob) -> tuple:
    """(runner, detector in eval mode with the run's weights); the job's classes fitted to the model's count.
    Call it inside ``runner.captured_stdout``."""
    from fltool.engine import runner as rn

    runner, model = rn.built_runner_with_weights(job.cfg, job.state, str(job.run.checkpoint))
    model.eval()
    num_classes = int(getattr(getattr(model, "bbox_head", None), "num_classes", 0) or 0)
    if len(job.classes) != num_classes:
        job.notes.append(f"{len(job.classes)} class names found for {num_classes} classes; the metadata names them "
                         "by index")
        job.classes = tuple(str(i) for i in range(num_classes))
    return runner, model


def export_source(job: ExportJob) -> dict:
    """Where the exported model came from (its metadata's ``source``)."""
    return {"config": job.run.config.name if job.run.config else None, "checkpoint": job.run.checkpoint.name}


def export_onnx(opts: ExportOptions, progress: ProgressFn = no_progress) -> ExportResult:
    """Find the run, load its weights strictly, export, check. Returns where the file went and what was found.
    ``opts.format == "openvino"``: :func:`fltool.deploy.openvino_export.export_openvino`."""
    from fltool.engine import runner as rn

    if opts.format == "openvino":
        from fltool.deploy.openvino_export import export_openvino

        return export_openvino(opts, progress)
    start = time.time()
    others = [p for p in parse_precisions(opts.precision) if p != "fp32"]
    if others:
        raise ConfigError(f"--precision {','.join(others)} needs --format openvino",
                          "an ONNX file is fp32; export with --format openvino for bf16 and int8")
    job = prepare_export(opts, progress)
    out = job.out
    with rn.captured_stdout(rn.stdout_log(job.cfg)):
        runner, model = built_model(job)
        progress(ProgressEvent("stage", f"exporting to {out.name}"))
        t0 = time.time()
        meta = export_model(model, job.cfg, out, classes=job.classes, img_size=opts.img_size, opset=opts.opset,
                            source=export_source(job), thresholds=job.thresholds)
        export_s = time.time() - t0
        report = None
        if opts.check:
            from fltool.deploy.parity import check_parity

            report = check_parity(runner, model, out, progress, subset=opts.check_images is not None)
    result = ExportResult(out, job.run.config, job.run.checkpoint, meta, out.stat().st_size, export_s, report,
                          job.notes + [f"MMEngine's logs of the check in {job.logs}"])
    write_report(result, start, onnx_file=str(out))
    return result


def write_report(result: ExportResult, start: float, **extra: Any) -> None:
    """The JSON beside the model: what was exported from where, its metadata, the check, each precision's AP."""
    write_json(result.report_file, {
        **extra, "model_file": str(result.model_file), "format": result.format,
        "config": str(result.config) if result.config else None, "checkpoint": str(result.checkpoint),
        "size_bytes": result.size_bytes, "export_s": round(result.export_s, 2),
        "wall_s": round(time.time() - start, 1), "metadata": asdict(result.meta),
        "check": result.check.as_dict() if result.check is not None else None,
        **({"precisions": result.precisions, "int8_error": result.int8_error} if result.format != "onnx" else {})})


def parse_precisions(value: Union[str, Sequence[str], None]) -> tuple:
    """``"fp32,int8"`` (or a list) to the export's precisions in EXPORT_PRECISIONS order, fp32 always first."""
    items = [s.strip().lower() for s in value.split(",")] if isinstance(value, str) else \
        [str(s).strip().lower() for s in (value or [])]
    unknown = [s for s in items if s and s not in EXPORT_PRECISIONS]
    if unknown:
        raise ConfigError(f"--precision {unknown[0]} is not one of {', '.join(EXPORT_PRECISIONS)}",
                          "give a comma-separated list, e.g. --precision fp32,bf16,int8")
    return tuple(p for p in EXPORT_PRECISIONS if p == "fp32" or p in items)


def _run_thresholds(checkpoint: Path, notes: list) -> Optional[dict]:
    """The score thresholds ``fltool analyze pr`` kept in the run (thresholds.json), for the metadata; None."""
    from fltool.engine.thresholds import THRESHOLDS_FILE, read_thresholds

    found = read_thresholds(checkpoint.parent)
    if found is None:
        return None
    chosen_for = Path(found.source.get("checkpoint") or checkpoint.name).name
    notes.append(f"score thresholds from {THRESHOLDS_FILE} carried into the metadata: {found.describe()}"
                 + ("" if chosen_for == checkpoint.name else f" (chosen for {chosen_for})"))
    return found.as_dict()


def _set_test_scale(cfg: Any, scale_wh: tuple) -> None:
    for step in cfg.test_dataloader.dataset.pipeline:
        if step.get("type") in _RESIZE_TYPES:
            step["scale"] = tuple(scale_wh)
            step.pop("scale_factor", None)
