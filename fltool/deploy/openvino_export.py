"""``fltool export --format openvino``: a trained RetinaNet as an OpenVINO IR, with its metadata, checked.

The detector is exported as for ``--format onnx`` (:func:`fltool.deploy.onnx_export.export_model`, into a temporary
folder), converted by ``openvino.convert_model`` and saved as an IR (``<name>.xml`` + ``<name>.bin``, weights kept
fp32: ``compress_to_fp16=False``) carrying the ONNX file's metadata in its rt_info
(``fltool_plugins.models.deploy_meta.RT_INFO_PATH``), then checked against PyTorch on the val split with OpenVINO (f32)
as the ONNX file is with ONNX Runtime (:mod:`fltool.deploy.parity`).

``--precision`` adds, each with its COCO AP on the same val split in the report:

- ``bf16``: the same IR run with OpenVINO's bf16 inference precision, where the CPU computes bf16 natively (AMX,
  AVX512_BF16: :func:`fltool.engine.precision.openvino_precision`); elsewhere the report says so and it is not run;
- ``int8``: NNCF post-training quantization with accuracy control (:mod:`fltool.deploy.quantize`), written beside the
  IR as ``<name>_int8.xml``/``.bin`` when it keeps AP within ``--max-ap-drop`` points of fp32's; else no INT8 file is
  written, the fp32 IR stays, and :attr:`ExportResult.int8_error` says why.

The report (``<name>.json`` beside the IR; the CLI prints it as tables) has the metadata, the check and
``precisions``: per precision its file, metrics and a note.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from fltool.deploy.onnx_export import (
    ExportJob,
    ExportOptions,
    ExportResult,
    built_model,
    export_model,
    export_source,
    parse_precisions,
    prepare_export,
    write_report,
)
from fltool.progress import ProgressEvent, ProgressFn, no_progress


def int8_path(xml: Path) -> Path:
    """Where the INT8 IR of ``xml`` goes: ``<name>_int8.xml`` beside it."""
    return Path(xml).with_name(f"{Path(xml).stem}_int8.xml")


def save_ir(model: Any, out: Path, meta: Any) -> int:
    """``model`` with ``meta`` in its rt_info, written as ``out`` (.xml) and its .bin, weights as they are (no fp16
    compression); written in a temporary folder beside ``out`` first, so that a failure leaves nothing half-written.
    Returns the size of both files in bytes."""
    import openvino as ov

    from fltool_plugins.models.deploy_meta import RT_INFO_PATH

    model.set_rt_info(meta.to_json(), list(RT_INFO_PATH))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        xml = Path(tmp) / out.name
        ov.save_model(model, str(xml), compress_to_fp16=False)
        xml.with_suffix(".bin").replace(out.with_suffix(".bin"))
        xml.replace(out)
    return out.stat().st_size + out.with_suffix(".bin").stat().st_size


def ir_meta_for(meta: Any, precision: str) -> Any:
    """The ONNX export's metadata, its ``source`` saying what the IR is (OpenVINO's version, the precision)."""
    import openvino as ov

    return dataclasses.replace(meta, source=dict(meta.source, format="openvino IR",
                                                 openvino=ov.__version__.split("-")[0], precision=precision))


def write_ir(job: ExportJob, model: Any, opts: ExportOptions, progress: ProgressFn) -> tuple:
    """The detector as ONNX (temporary), converted and saved as the IR at ``job.out``: (ov.Model, its metadata)."""
    import openvino as ov

    progress(ProgressEvent("stage", f"exporting to {job.out.name}"))
    job.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=job.out.parent, prefix=".export-") as tmp:
        onnx_file = Path(tmp) / "graph.onnx"
        meta = export_model(model, job.cfg, onnx_file, classes=job.classes, img_size=opts.img_size, opset=opts.opset,
                            source=export_source(job), thresholds=job.thresholds)
        progress(ProgressEvent("stage", f"converting to OpenVINO ({job.out.name})"))
        ov_model = ov.convert_model(str(onnx_file))
    meta = ir_meta_for(meta, "fp32")
    save_ir(ov_model, job.out, meta)
    return ov_model, meta


def ir_detector(job: ExportJob, precision: str) -> Any:
    """The written IR in OpenVINO at ``precision`` ("fp32"/"bf16"), as an MMEngine model with the config's data
    preprocessor (what the check and the evaluations run)."""
    from fltool.deploy.parity import exported_detector
    from fltool_plugins.models import OpenVINOBackend

    return exported_detector(OpenVINOBackend(job.out, precision), job.cfg.model.get("data_preprocessor"))


def export_openvino(opts: ExportOptions, progress: ProgressFn = no_progress) -> ExportResult:
    """Find the run, load its weights strictly, export the IR, check it, and measure and write the other precisions
    asked for (module docstring)."""
    from fltool.deploy.parity import check_parity
    from fltool.deploy.quantize import check_int8_options
    from fltool.engine import runner as rn
    from fltool.engine.backends import require_openvino
    from fltool.engine.compat import after_openvino

    start = time.time()
    precisions = parse_precisions(opts.precision)
    int8 = "int8" in precisions
    require_openvino("--format openvino" + (" --precision int8" if int8 else ""), int8=int8)
    if int8:
        check_int8_options(opts.calib_images, opts.max_ap_drop)
    job = prepare_export(opts, progress, suffix=".xml")
    with rn.captured_stdout(rn.stdout_log(job.cfg)):
        runner, model = built_model(job)
        t0 = time.time()
        ov_model, meta = write_ir(job, model, opts, progress)
        export_s = time.time() - t0
        report = None
        if opts.check:
            report = check_parity(runner, model, job.out, progress, subset=opts.check_images is not None,
                                  exported=ir_detector(job, "fp32"), runtime="OpenVINO")
        found, int8_error = precision_report(job, runner, ov_model, meta, report, precisions, opts, progress)
    size = job.out.stat().st_size + job.out.with_suffix(".bin").stat().st_size
    result = ExportResult(job.out, job.run.config, job.run.checkpoint, meta, size, export_s, report,
                          job.notes + [f"MMEngine's logs of the check in {job.logs}"], format="openvino",
                          precisions=found, int8_error=int8_error)
    write_report(result, start, bin_file=str(job.out.with_suffix(".bin")))
    del runner, model, ov_model
    after_openvino()
    return result


def precision_report(job: ExportJob, runner: Any, ov_model: Any, meta: Any, check: Any, precisions: tuple,
                     opts: ExportOptions, progress: ProgressFn) -> tuple:
    """({precision: {file, metrics, note, ...}}, why the INT8 model was not kept or None): each precision's COCO
    metrics on the check's val split."""
    from fltool.deploy.parity import val_metrics

    subset = opts.check_images is not None
    fp32_metrics = check.metrics_onnx if check is not None else None
    if fp32_metrics is None and len(precisions) > 1:  # the reference the others are compared with
        fp32_metrics = val_metrics(runner, ir_detector(job, "fp32"), progress, subset, "fp32 (OpenVINO)")
    found = {"fp32": dict(file=str(job.out), metrics=fp32_metrics,
                          note="OpenVINO f32" + ("" if fp32_metrics else "; AP not measured (--no-check)"))}
    if "bf16" in precisions:
        found["bf16"] = bf16_entry(job, runner, subset, progress)
    error = None
    if "int8" in precisions:
        found["int8"], error = int8_entry(job, runner, ov_model, meta, fp32_metrics, opts, progress)
    return found, error


def bf16_entry(job: ExportJob, runner: Any, subset: bool, progress: ProgressFn) -> dict:
    """The IR's metrics with OpenVINO's bf16 inference precision, where the CPU has native bf16; else why not."""
    from fltool.deploy.parity import val_metrics
    from fltool.engine.precision import openvino_precision

    chosen = openvino_precision("bf16")
    if chosen.name != "bf16":
        return dict(file=None, metrics=None, note=f"not run: {chosen.reason}")
    detector = ir_detector(job, "bf16")
    metrics = val_metrics(runner, detector, progress, subset, "bf16 (OpenVINO)")
    ran = detector.backend.precision  # what OpenVINO compiled it for
    return dict(file=str(job.out), metrics=metrics, reason=chosen.reason,
                note="OpenVINO bf16, native on this CPU" if ran == "bf16" else "OpenVINO f32 (it did not take bf16)")


def int8_entry(job: ExportJob, runner: Any, ov_model: Any, meta: Any, fp32_metrics: Any, opts: ExportOptions,
               progress: ProgressFn) -> tuple:
    """NNCF's INT8 model written beside the IR when it kept AP within --max-ap-drop: (report entry, None); else
    (entry, why), and nothing written."""
    from fltool.deploy.quantize import quantize_int8

    outcome = quantize_int8(ov_model, meta, runner, fp32_metrics, calib_images=opts.calib_images,
                            max_ap_drop=opts.max_ap_drop, progress=progress)
    path = int8_path(job.out)
    entry = dict(file=None, metrics=outcome.metrics, **outcome.as_dict())
    if outcome.model is None:
        entry["note"] = f"not kept: {outcome.reason}"
        if path.is_file():
            job.notes.append(f"{path} is from an earlier export: it was not replaced")
        return entry, outcome.reason
    progress(ProgressEvent("stage", f"writing {path.name}"))
    save_ir(outcome.model, path, ir_meta_for(meta, "int8"))
    entry.update(file=str(path), note=f"NNCF, {outcome.calib_images} calibration images, AP drop at most "
                                      f"{opts.max_ap_drop:g}")
    return entry, None
