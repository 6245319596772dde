"""What ``bench speed-accuracy`` runs for each backend and precision (``--backend``, ``--precision``): one
:class:`Runtime` per row, every one an MMEngine model that takes the same preprocessed batches.

- ``pytorch``: fltool's model (channels-last where the config's hook asks for it); ``mmdet``: the same weights as stock
  MMDetection runs them (NCHW). Precisions fp32 and bf16 (torch autocast: on a CPU without native bf16 it is emulated,
  which the precision note says, as ``fltool eval --precision bf16``).
- ``onnxruntime``: the model exported by ``fltool export`` (into ``work_dir/onnx``), fp32.
- ``openvino``: that ONNX file read by OpenVINO: fp32; bf16 through OpenVINO's inference precision, only where the CPU
  computes bf16 natively (elsewhere the row is left out, with a note); int8: NNCF's post-training quantization
  calibrated on ``calib_images`` training images (the test pipeline's preprocessing, as ``fltool export --precision
  int8``; no accuracy control here: the row's AP is what it keeps).

A (backend, precision) pair the backend does not support is left out with one note.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from fltool.errors import ConfigError
from fltool.progress import ProgressEvent, ProgressFn

PRECISIONS = ("fp32", "bf16", "int8")
SUPPORTED = {"pytorch": ("fp32", "bf16"), "mmdet": ("fp32", "bf16"), "onnxruntime": ("fp32",),
             "openvino": ("fp32", "bf16", "int8")}


def parse_precisions(text: Union[str, Sequence[str], None]) -> list:
    """``"fp32,bf16,int8"`` (or a list) to the precisions, each once, in that order."""
    items = [s.strip().lower() for s in text.split(",")] if isinstance(text, str) else \
        [str(s).strip().lower() for s in (text or ["fp32"])]
    unknown = [s for s in items if s and s not in PRECISIONS]
    if unknown:
        raise ConfigError(f"--precision {unknown[0]} is not one of {', '.join(PRECISIONS)}",
                          "give a comma-separated list, e.g. --precision fp32,bf16,int8")
    found = [p for p in PRECISIONS if p in items]
    if not found:
        raise ConfigError("no precision given", f"use one or more of: {', '.join(PRECISIONS)}")
    return found


@dataclass
class Runtime:
    """One row's model: ``backend`` at ``precision``; ``autocast``: the torch dtype the network runs under."""

    backend: str
    precision: str
    model: Any
    autocast: Any = None


@dataclass
class RuntimeJob:
    """What the runtimes of one model are built from."""

    cfg: Any
    model: Any  # the PyTorch detector with its weights, in eval mode
    label: str
    source: dict  # the model's config and checkpoint, for the exported file's metadata
    metainfo: dict
    work_dir: Path
    device: str
    calib_images: int = 100


def build_runtimes(job: RuntimeJob, backends: Sequence[str], precisions: Sequence[str], progress: ProgressFn,
                   notes: list) -> list:
    """Every supported (backend, precision) pair of ``backends`` x ``precisions``, in that order (module docstring)."""
    runtimes, onnx_file, skipped = [], None, []
    for backend in backends:
        for precision in precisions:
            if precision not in SUPPORTED[backend]:
                skipped.append(f"{backend} {precision}")
                continue
            if backend in ("pytorch", "mmdet"):
                runtimes.append(torch_runtime(job, backend, precision, notes))
                continue
            onnx_file = onnx_file or export_onnx(job, progress)
            found = exported_runtime(job, backend, precision, onnx_file, progress, notes)
            if found is not None:
                runtimes.append(found)
    if skipped:
        supported = "; ".join(f"{b}: {', '.join(SUPPORTED[b])}" for b in backends)
        notes.append(f"{job.label}: no row for {', '.join(skipped)}: not run by that backend ({supported})")
    if "openvino" in backends:
        from fltool.engine.compat import after_openvino

        after_openvino()
    return runtimes


def torch_runtime(job: RuntimeJob, backend: str, precision: str, notes: list) -> Runtime:
    """The PyTorch detector (``mmdet``: a copy in NCHW, stock MMDetection's layout), under autocast for bf16."""
    import torch

    from fltool.engine.precision import choose_precision

    model = job.model
    if backend == "mmdet":
        model = copy.deepcopy(job.model).to(memory_format=torch.contiguous_format)
    if precision == "fp32":
        return Runtime(backend, precision, model)
    chosen = choose_precision(precision, job.device)
    notes.append(f"{job.label}: {backend} {precision}: {chosen.reason}")
    return Runtime(backend, precision, model, torch.bfloat16)


def export_onnx(job: RuntimeJob, progress: ProgressFn) -> Path:
    """The model exported (any input size) into ``work_dir/onnx``."""
    from fltool.deploy.onnx_export import export_model

    out = job.work_dir / "onnx" / f"{job.label.replace(':', '_').replace('#', '_')}.onnx"
    progress(ProgressEvent("stage", f"{job.label}: exporting to ONNX ({out.name})"))
    num_classes = int(job.model.bbox_head.num_classes) if hasattr(job.model, "bbox_head") else 0
    classes = list(job.metainfo.get("classes") or [])
    if len(classes) != num_classes:
        classes = [str(i) for i in range(num_classes)]
    export_model(job.model, job.cfg, out, classes=classes, source=job.source)
    return out


def exported_runtime(job: RuntimeJob, backend: str, precision: str, onnx_file: Path, progress: ProgressFn,
                     notes: list) -> Optional[Runtime]:
    """The exported file run by ONNX Runtime, or by OpenVINO at ``precision`` (None: bf16 on a CPU without it)."""
    from fltool.deploy.parity import exported_detector, onnx_detector

    prep = job.cfg.model.get("data_preprocessor")
    if backend == "onnxruntime":
        return Runtime(backend, precision, onnx_detector(onnx_file, prep))
    from fltool.engine.precision import openvino_precision
    from fltool_plugins.models import OpenVINOBackend
    from fltool_plugins.models.openvino_runtime import model_meta

    if precision == "int8":
        ov_backend = OpenVINOBackend(int8_model(job, onnx_file, progress), "fp32", meta=model_meta(onnx_file))
        return Runtime(backend, precision, exported_detector(ov_backend, prep))
    chosen = openvino_precision(precision)
    if chosen.name != precision:
        notes.append(f"{job.label}: openvino {precision} left out: {chosen.reason}")
        return None
    return Runtime(backend, precision, exported_detector(OpenVINOBackend(onnx_file, precision), prep))


def int8_model(job: RuntimeJob, onnx_file: Path, progress: ProgressFn) -> Any:
    """The exported file quantized to INT8 by NNCF, calibrated on ``job.calib_images`` training images."""
    import openvino as ov

    from fltool.deploy.quantize import calibration_inputs, graph_preprocessor, quantize_plain
    from fltool.engine.backends import require_openvino

    require_openvino("--precision int8", int8=True)
    calib = calibration_inputs(job.cfg, graph_preprocessor(job.cfg.model.get("data_preprocessor")),
                               job.calib_images, progress)
    progress(ProgressEvent("stage", f"{job.label}: quantizing to INT8 (NNCF, {len(calib)} calibration images)"))
    return quantize_plain(ov.Core().read_model(str(onnx_file)), calib)
