"""``fltool predict``: a trained detector applied to images, folders, globs and videos.

The steps are kept apart so that another backend can take the model's place:

- :class:`Preprocessor`: MMDetection's test pipeline (its ``LoadAnnotations`` left out, a video frame loaded from
  memory) and the model's ``data_preprocessor`` (normalisation, padding, batching) turn images into
  ``(inputs, data_samples)``: an (N, 3, H, W) tensor and the per-image metadata (scale factors);
- a :data:`DetectFn`, :class:`ModelBackend` here, is one call from that batch to detections in the original
  images' pixels: ``detect(inputs, data_samples) -> [(bboxes, scores, labels), ...]``;
- :mod:`fltool.engine.predict_output` writes drawings, label files, CSV and COCO-results JSON.

Predict replaces no file it did not write: an output folder that is an input folder or holds an input file is
refused (:func:`~fltool.engine.predict_inputs.check_apart`), an existing one must be empty or an earlier predict's
(:func:`~fltool.engine.predict_output.earlier_outputs`), and the default one is always new.

``backend='pytorch'``: the config and checkpoint come from the work dir or checkpoint given
(:func:`fltool.engine.workdir.resolve_run`), the class names from the checkpoint
(:func:`~fltool.engine.workdir.checkpoint_classes`); the weights are loaded strictly, and the config's test pipeline
feeds the model. The same preprocessing and model call as ``fltool eval`` give the same boxes for the same images.

``backend='onnxruntime'``/``'openvino'``: the file ``fltool export`` wrote runs in ``OnnxRuntimeDetector`` /
``OpenVINODetector`` (an .onnx, or for OpenVINO also the IR's .xml; ``precision`` is then OpenVINO's, bf16 only on a
CPU with native bf16); a checkpoint or work dir is exported first by the exporter the caller hands in
(:class:`fltool.engine.backends.Exporter`), as ``fltool eval --backend onnxruntime`` does. The file's
metadata gives the classes and the preprocessing (resize, normalisation, channel order); when a config is known
(``--config``, the run's, or the one the metadata names beside the file) its classes and normalisation must agree.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fltool.engine.backends import Exporter
from fltool.engine.predict_inputs import Frame, Source, check_apart, count, expand, frames
from fltool.engine.predict_output import ImageDetections, OutputWriter, cannot_write, earlier_outputs
from fltool.errors import CheckpointError, ConfigError, DataError
from fltool.progress import ProgressEvent, ProgressFn, no_progress

#: How predict names each runtime (progress, summary).
RUNTIME_NAMES = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
Detections = tuple  # (bboxes (N, 4) xyxy, scores (N,), labels (N,)) as numpy arrays, original image pixels
DetectFn = Callable[[Any, Sequence[Any]], list]  # (inputs, data_samples) -> [Detections per image]


@dataclass
class PredictOptions:
    target: Path  # a checkpoint, a work dir, or (onnxruntime/openvino) an .onnx (openvino: or .xml) fltool export wrote
    inputs: Sequence[str]
    out_dir: Optional[Path] = None
    config: Optional[str] = None
    score_thr: Any = 0.3  # a score, or "auto": the run's thresholds.json per class (fltool.engine.thresholds)
    batch_size: int = 1
    device: str = "cpu"
    classes: Optional[Sequence[str]] = None
    stride: int = 1
    draw: bool = True
    trust_checkpoint: bool = False
    backend: str = "pytorch"  # or "onnxruntime", "openvino" (fltool.engine.backends)
    precision: str = "fp32"  # the PyTorch model under autocast: "auto" | "fp32" | "bf16" | "fp16"; OpenVINO's


@dataclass
class PredictResult:
    out_dir: Path
    config: Optional[Path]  # None: an .onnx file run on its metadata alone
    checkpoint: Path  # the checkpoint given, or the .onnx file given
    classes: tuple
    device: str
    images: int
    detections_per_class: dict
    failed: list  # (input, reason)
    timing: dict  # ms per image: model, preprocess, total; and what they were measured on
    files: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    backend: str = "pytorch"
    onnx_file: Optional[Path] = None  # the exported file ONNX Runtime or OpenVINO ran
    score_thresholds: dict = field(default_factory=dict)  # class -> the score threshold applied


@dataclass
class LoadedModel:
    """What predict runs, and where it came from."""

    model: Any  # in eval mode: the MMDetection detector, or an OnnxRuntimeDetector / OpenVINODetector
    pipeline: list  # the test pipeline that feeds it
    classes: tuple
    checkpoint: Path  # the checkpoint or .onnx file given (a work dir's: its last checkpoint)
    config: Optional[Path]
    cfg: Any  # the loaded config, or None
    threads: int  # torch's, or the runtime's (ONNX Runtime's intra-op, OpenVINO's inference) threads
    onnx_file: Optional[Path] = None
    notes: list = field(default_factory=list)
    score_thresholds: Any = None  # (num classes,) the threshold of each label: --score-thr, or the run's (auto)


def config_test_pipeline(cfg: Any) -> list:
    """The config's test pipeline (test_dataloader's, else ``test_pipeline``), or a ConfigError."""
    pipeline = (cfg.get("test_dataloader") or {}).get("dataset", {}).get("pipeline") or cfg.get("test_pipeline")
    if not pipeline:
        raise ConfigError("the run's config has no test pipeline", "predict needs test_dataloader.dataset."
                                                                   "pipeline (Load -> Resize -> Pack)")
    return list(pipeline)


class Preprocessor:
    """Images (files or decoded frames) to the batch the model takes: test pipeline + data_preprocessor."""

    def __init__(self, pipeline: Sequence[dict], data_preprocessor: Any) -> None:
        from mmengine.dataset import Compose

        steps = [dict(step) for step in pipeline if "LoadAnnotations" not in str(step.get("type"))]
        if "Load" not in str(steps[0].get("type")):
            raise ConfigError(f"the test pipeline starts with {steps[0].get('type')}, not an image loader")
        load = dict(steps[0], check_size=False) if steps[0]["type"] == "LoadImageChecked" else steps[0]
        self.load_file = Compose([load])
        self.load_array = Compose([dict(type="mmdet.LoadImageFromNDArray")])
        self.transform = Compose(steps[1:])
        self.data_preprocessor = data_preprocessor

    def item(self, frame: Frame, index: int) -> tuple[dict, np.ndarray]:
        """(packed inputs of one image, the original image as decoded); raises on an unreadable file."""
        if frame.image is not None:
            results = self.load_array(dict(img=frame.image, img_id=index, img_path=str(frame.source.path)))
        else:
            results = self.load_file(dict(img_path=str(frame.source.path), img_id=index))
        original = results["img"]
        return self.transform(results), original

    def batch(self, packed: Sequence[dict]) -> tuple[Any, list]:
        from mmengine.dataset import pseudo_collate

        data = self.data_preprocessor(pseudo_collate(list(packed)), False)
        return data["inputs"], data["data_samples"]


class ModelBackend:
    """A detector as a backend (MMDetection's model, or an ``OnnxRuntimeDetector`` running an exported file): one
    batch in, detections in original image pixels out."""

    def __init__(self, model: Any, autocast_dtype: Any = None) -> None:
        self.model = model
        self.autocast_dtype = autocast_dtype  # the network under autocast (--precision bf16/fp16), else None

    def __call__(self, inputs: Any, data_samples: Sequence[Any]) -> list:
        import torch

        device = inputs.device.type if hasattr(inputs, "device") else "cpu"
        with torch.no_grad(), torch.autocast(device, dtype=self.autocast_dtype,
                                             enabled=self.autocast_dtype is not None):
            results = self.model(inputs, list(data_samples), mode="predict")
        out = []
        for sample in results:
            pred = sample.pred_instances
            out.append((pred.bboxes.float().cpu().numpy(), pred.scores.float().cpu().numpy(),
                        pred.labels.cpu().numpy().astype(np.int64)))
        return out


def _autocast_dtype(opts: PredictOptions, loaded: LoadedModel, progress: ProgressFn) -> Any:
    """The autocast dtype of ``--precision`` for the PyTorch model (None: fp32, or another backend)."""
    import torch

    from fltool.engine.precision import choose_precision

    if opts.backend != "pytorch":
        return None
    precision = choose_precision(opts.precision, "cuda" if str(opts.device).startswith("cuda") else "cpu")
    if precision.mixed or opts.precision == "auto":
        progress(ProgressEvent("note", f"precision: {precision.reason}"))
    loaded.notes.append(f"precision: {precision.name}")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision.name)


def _device(name: str) -> str:
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is available here", "use --device cpu")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError(f"unknown device '{name}'", "use cpu, cuda or cuda:N")
    return name


def load_model(opts: PredictOptions, out_dir: Path, progress: ProgressFn = no_progress,
               replaceable: Optional[set] = None, exporter: Optional[Exporter] = None) -> LoadedModel:
    """The model ``opts.target`` names, on ``opts.backend`` (a checkpoint is written as ONNX by ``exporter`` into
    ``out_dir`` for ONNX Runtime or OpenVINO, replacing there only a file named in ``replaceable``: an earlier
    predict's)."""
    from fltool.engine.backends import EXPORTED_BACKENDS, check_backend, check_checkpoint_for

    check_checkpoint_for(check_backend(opts.backend), Path(opts.target))
    if opts.backend in EXPORTED_BACKENDS:
        return _load_onnx(opts, out_dir, progress, replaceable or set(), exporter)
    return _load_torch(opts, progress)


def _load_torch(opts: PredictOptions, progress: ProgressFn) -> LoadedModel:
    """The MMDetection model of the run (weights loaded strictly) on the device, in eval mode."""
    import torch

    from fltool.engine import compat
    from fltool.engine import runner as rn
    from fltool.engine.checkpoint import checkpoint_state_dict
    from fltool.engine.config import load_config
    from fltool.engine.datasource import config_classes
    from fltool.engine.workdir import checkpoint_classes, resolve_run

    compat.apply()
    run = resolve_run(Path(opts.target), opts.config, opts.trust_checkpoint)
    progress(ProgressEvent("stage", f"loading {run.checkpoint.name} (config: {run.config_name})"))
    cfg = load_config(run.config_spec)
    rn.harden(cfg)
    rn.check_types(cfg)
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    with rn.translate_errors():
        model = MODELS.build(cfg.model)
    state = checkpoint_state_dict(run.checkpoint, trust=opts.trust_checkpoint)
    rn.load_weights_strict(model, state, str(run.checkpoint))
    head = cfg.model.get("bbox_head") or {}
    classes = checkpoint_classes(run.checkpoint, opts.trust_checkpoint) or config_classes(cfg)
    num_classes = head.get("num_classes") or (len(classes) if classes else 0)
    if classes is None:
        classes = tuple(f"class{i}" for i in range(num_classes))
    if len(classes) != num_classes:
        raise CheckpointError(f"{run.checkpoint} names {len(classes)} classes but its model has {num_classes}",
                              "give the config the checkpoint was trained with (--config)")
    model.to(_device(opts.device)).eval()
    return LoadedModel(model, config_test_pipeline(cfg), tuple(classes), run.checkpoint, run.config, cfg,
                       torch.get_num_threads())


def _load_onnx(opts: PredictOptions, out_dir: Path, progress: ProgressFn, replaceable: set,
               exporter: Optional[Exporter]) -> LoadedModel:
    """An exported file in ``OnnxRuntimeDetector`` or ``OpenVINODetector`` (see the module docstring)."""
    from fltool.engine import compat
    from fltool.engine.backends import EXPORTED_BACKENDS, check_meta_fits, meta_inputs, onnx_file_for, read_meta
    from fltool.engine.config import load_config
    from fltool.engine.datasource import config_classes
    from fltool.engine.workdir import onnx_config, resolve_run

    if opts.device != "cpu":
        raise ConfigError(f"--device {opts.device}: the {opts.backend} backend runs on the CPU",
                          "use --device cpu, or --backend pytorch for the GPU")
    compat.apply()
    target, notes = Path(opts.target), []
    if target.suffix in EXPORTED_BACKENDS[opts.backend]:
        checkpoint = onnx_file = target.resolve()
        meta = read_meta(onnx_file)
        run = onnx_config(onnx_file, opts.config, meta.source.get("config"), opts.trust_checkpoint, notes)
        config = run.config if run is not None else None
    else:
        run = resolve_run(target, opts.config, opts.trust_checkpoint)
        checkpoint, config = run.checkpoint, run.config
        for name in (f"{checkpoint.stem}.onnx", f"{checkpoint.stem}.json"):  # what the export writes
            if (out_dir / name).exists() and name not in replaceable:
                raise DataError(f"refusing to replace {out_dir / name}: fltool predict did not write it",
                                "give a new or empty --out-dir")
        onnx_file = onnx_file_for(run.checkpoint, exporter, backend=opts.backend, out_dir=out_dir,
                                  config=opts.config, trust=opts.trust_checkpoint, progress=progress, notes=notes)
        meta = read_meta(onnx_file)
    cfg = None
    if run is not None:
        cfg = load_config(run.config_spec)
        check_meta_fits(meta, onnx_file, config_classes(cfg), cfg.model.get("data_preprocessor") or {})
    pipeline, data_preprocessor = meta_inputs(meta)
    progress(ProgressEvent("stage", f"loading {onnx_file.name} in {RUNTIME_NAMES[opts.backend]}"))
    from mmengine.registry import init_default_scope

    import fltool_plugins  # noqa: F401  (registers LoadImageChecked and the exported detectors)
    from fltool_plugins.models import OnnxRuntimeDetector, OpenVINODetector

    init_default_scope("mmdet")
    if opts.backend == "openvino":
        from fltool.engine.backends import openvino_run_precision

        precision = openvino_run_precision(opts.precision, onnx_file, notes)
        model = OpenVINODetector(str(onnx_file), data_preprocessor=data_preprocessor, precision=precision).eval()
    else:
        model = OnnxRuntimeDetector(str(onnx_file), data_preprocessor=data_preprocessor).eval()
    return LoadedModel(model, pipeline, tuple(meta.classes), checkpoint, config, cfg, model.backend.threads,
                       onnx_file, notes)


def _default_out_dir(target: Path) -> Path:
    """A new folder work_dirs/predict_<run folder name> (the work dir given, or the folder of the file given), or
    when that exists predict_<name>_2, _3, ... (as Ultralytics numbers predict, predict2): two runs never mix or
    replace each other's outputs. It is created here, so that a run started beside this one takes the next."""
    target = Path(target).resolve()
    base = Path("work_dirs") / f"predict_{(target if target.is_dir() else target.parent).name}"
    for n in itertools.count(1):
        out = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            out.mkdir(parents=True)
            return out
        except FileExistsError:
            continue
        except OSError as exc:
            raise cannot_write(out, exc) from exc
    raise AssertionError("unreachable")


def _output_folder(opts: PredictOptions, sources: Sequence[Source]) -> tuple[Path, set, list]:
    """(the output folder, the files in it an earlier predict wrote, which this run may replace, the folders made
    here: removed again if the run stops before writing into them). The refusals come before the model is loaded
    or anything is written."""
    if opts.out_dir is None:
        made = [] if Path("work_dirs").is_dir() else [Path("work_dirs")]
        out_dir = _default_out_dir(opts.target)
        return out_dir, set(), [out_dir, *made]
    out_dir = Path(opts.out_dir).expanduser()
    check_apart(out_dir, opts.inputs, sources)
    return out_dir, earlier_outputs(out_dir), []


def _colours(cfg: Any, n: int) -> list:
    from fltool.engine.datasource import palette
    from fltool.engine.runner import unwrap_dataset

    if cfg is None:
        return palette(n)
    loader = cfg.get("test_dataloader") or {}
    meta = (unwrap_dataset(loader.get("dataset") or {}).get("metainfo") or {}) if loader else {}
    given = list(meta.get("palette") or [])
    return [tuple(c) for c in given] if len(given) >= n else palette(n)


def _class_filter(classes: tuple, wanted: Optional[Sequence[str]]) -> Optional[np.ndarray]:
    if not wanted:
        return None
    names = [n.strip() for item in wanted for n in str(item).split(",") if n.strip()]
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise ConfigError(f"--classes {', '.join(unknown)}: not a class of this model",
                          f"its classes: {', '.join(classes)}")
    return np.array([classes.index(n) for n in names], dtype=np.int64)


def predict(opts: PredictOptions, progress: ProgressFn = no_progress,
            detect: Optional[DetectFn] = None, exporter: Optional[Exporter] = None) -> PredictResult:
    """Run the model over the inputs and write the outputs (see the module docstring)."""
    if opts.batch_size < 1 or opts.stride < 1:
        raise ConfigError("--batch-size and --stride must be at least 1")
    sources, failed = expand(opts.inputs, Path(opts.out_dir).expanduser() if opts.out_dir else None)
    if not sources:
        first = failed[0] if failed else ("", "no input given")
        raise DataError(f"nothing to predict on: {first[0]}: {first[1]}", "give image files, folders, globs or "
                                                                          "videos")
    out_dir, replaceable, made = _output_folder(opts, sources)
    try:
        return _predict_into(out_dir, replaceable, opts, sources, failed, progress, detect, exporter)
    except BaseException:
        for folder in made:  # made for this run and left empty (e.g. the model did not load): not kept
            try:
                os.rmdir(folder)
            except OSError:
                pass
        raise


def score_thresholds(value: Any, loaded: LoadedModel) -> np.ndarray:
    """The score threshold of each label: ``--score-thr`` for all, or with ``auto`` the ones ``fltool analyze pr``
    chose for the run (each class's where chosen, else the overall one): an exported file's metadata, else
    thresholds.json beside the checkpoint (or the .onnx file)."""
    from fltool.engine.thresholds import AUTO, Thresholds, parse_score_thr, run_thresholds

    value = parse_score_thr(value)
    if value != AUTO:
        return np.full(len(loaded.classes), float(value))
    chosen = None
    if loaded.onnx_file is not None and loaded.checkpoint == loaded.onnx_file:  # an exported file given
        from fltool.engine.backends import read_meta

        carried = getattr(read_meta(loaded.onnx_file), "thresholds", None)
        chosen = Thresholds.from_dict(carried, f"{loaded.onnx_file.name}'s metadata") if carried else None
    chosen = chosen or run_thresholds(loaded.checkpoint, loaded.notes)
    loaded.notes.append(f"--score-thr auto: {chosen.describe(loaded.classes)}")
    return chosen.for_classes(loaded.classes)


def _predict_into(out_dir: Path, replaceable: set, opts: PredictOptions, sources: Sequence[Source], failed: list,
                  progress: ProgressFn, detect: Optional[DetectFn], exporter: Optional[Exporter]) -> PredictResult:
    """:func:`predict` once its output folder is settled; what was written so far is listed in the folder's
    manifest whatever stops the run."""
    loaded = load_model(opts, out_dir, progress, replaceable, exporter)
    loaded.score_thresholds = score_thresholds(opts.score_thr, loaded)
    classes = loaded.classes
    keep = _class_filter(classes, opts.classes)
    writer = OutputWriter(out_dir, classes, _colours(loaded.cfg, len(classes)), opts.draw, replaceable)
    if loaded.onnx_file is not None:  # a checkpoint exported into the folder to run it, and its report
        writer.adopt(loaded.onnx_file)
        writer.adopt(loaded.onnx_file.with_suffix(".json"))
    try:
        return _predict_all(writer, loaded, keep, opts, sources, failed, progress, detect)
    except BaseException:
        writer.abort()
        raise


def _predict_all(writer: OutputWriter, loaded: LoadedModel, keep: Optional[np.ndarray], opts: PredictOptions,
                 sources: Sequence[Source], failed: list, progress: ProgressFn, detect: Optional[DetectFn]
                 ) -> PredictResult:
    """Every frame through the preprocessor and ``detect`` (default: the loaded model) into ``writer``; the
    summary last."""
    import torch

    from fltool.fileio import cpu_name

    classes, out_dir = loaded.classes, writer.out_dir
    pre = Preprocessor(loaded.pipeline, loaded.model.data_preprocessor)
    detect = detect or ModelBackend(loaded.model, _autocast_dtype(opts, loaded, progress))
    total = count(sources, opts.stride)
    per_class = dict.fromkeys(classes, 0)
    timing = {"model_s": 0.0, "preprocess_s": 0.0}
    done = 0
    start = time.perf_counter()
    progress(ProgressEvent("stage", "predicting", 0, total))

    def flush(batch: list) -> None:
        nonlocal done
        t0 = time.perf_counter()
        inputs, samples = pre.batch([packed for _, packed, _ in batch])
        t1 = time.perf_counter()
        outputs = detect(inputs, samples)
        if str(opts.device).startswith("cuda"):
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        timing["preprocess_s"] += t1 - t0
        timing["model_s"] += t2 - t1
        for (frame, _, original), (bboxes, scores, labels) in zip(batch, outputs):
            mask = scores >= loaded.score_thresholds[labels]
            if keep is not None:
                mask &= np.isin(labels, keep)
            det = ImageDetections(frame.name, frame.source.path, frame.frame, original.shape[1],
                                  original.shape[0], bboxes[mask], scores[mask], labels[mask])
            for label in det.labels.tolist():
                per_class[classes[label]] += 1
            writer.add(det, original)
        done += len(batch)
        progress(ProgressEvent("stage", "predicting", done, max(total, done)))

    pending: list = []
    for frame in frames(sources, opts.stride, failed):
        t0 = time.perf_counter()
        try:
            packed, original = pre.item(frame, done + len(pending))
        except Exception as exc:  # noqa: BLE001 - one unreadable input is named and skipped, the rest goes on
            failed.append((str(frame.source.path), " ".join(str(exc).split())[:400]))
            continue
        timing["preprocess_s"] += time.perf_counter() - t0
        pending.append((frame, packed, original))
        if len(pending) == opts.batch_size:
            flush(pending)
            pending = []
    if pending:
        flush(pending)
    if done != total:  # a video's frame count was an estimate, or inputs failed: end the bar where it stopped
        progress(ProgressEvent("stage", "predicting", done, done))
    wall = time.perf_counter() - start
    images = writer.images
    per_image = {k.replace("_s", "_ms"): (1000 * v / images if images else None) for k, v in timing.items()}
    per_image["total_ms"] = 1000 * wall / images if images else None
    device_name = torch.cuda.get_device_name(0) if str(opts.device).startswith("cuda") else cpu_name()
    per_image.update(device=opts.device, device_name=device_name, backend=opts.backend, threads=loaded.threads,
                     batch_size=opts.batch_size)
    summary = {"checkpoint": str(loaded.checkpoint), "config": str(loaded.config) if loaded.config else None,
               "backend": opts.backend, "onnx_file": str(loaded.onnx_file) if loaded.onnx_file else None,
               "classes": list(classes), "images": images, "detections_per_class": per_class,
               "score_thr": opts.score_thr, "failed": [{"input": i, "reason": r} for i, r in failed],
               "score_thresholds": dict(zip(classes, loaded.score_thresholds.tolist())),
               "timing": per_image, "notes": loaded.notes}
    files = writer.close(summary)
    return PredictResult(out_dir, loaded.config, loaded.checkpoint, classes, opts.device, images, per_class, failed,
                         per_image, files, loaded.notes, opts.backend, loaded.onnx_file, summary["score_thresholds"])
