"""``fltool predict``: a thin wrapper over fltool.engine.predict."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated

from fltool.cli.common import BackendName, Precision, PrecisionOpt, console, err_console, table
from fltool.cli.progress import ProgressDisplay
from fltool.errors import DataError


def _check_score_thr(value: str) -> Any:
    """A score in [0, 1] or auto; anything else is a usage error (exit 2)."""
    from fltool.engine.thresholds import parse_score_thr
    from fltool.errors import ConfigError

    try:
        return parse_score_thr(value)
    except ConfigError as exc:
        raise typer.BadParameter(exc.message) from None


def _thr_text(given: Any, applied: dict) -> str:
    if isinstance(given, float):
        return f"{given:g}"
    return "auto (" + ", ".join(f"{name} {thr:.3g}" for name, thr in applied.items()) + ")"


def result_table(result: Any, score_thr: Any) -> Any:
    """What predict found, and how fast, on what."""
    t = result.timing
    rows = [["images", result.images], ["detections", sum(result.detections_per_class.values())]]
    rows += [[f"  {name}", n] for name, n in result.detections_per_class.items()]

    def ms(key: str) -> str:
        return "n/a" if t.get(key) is None else f"{t[key]:.1f}"

    rows += [["ms per image: model", ms("model_ms")], ["ms per image: preprocessing", ms("preprocess_ms")],
             ["ms per image: all (read to written)", ms("total_ms")]]
    if result.failed:
        rows.append(["failed inputs", len(result.failed)])
    runtime = {"onnxruntime": "ONNX Runtime, intra-op", "openvino": "OpenVINO"}.get(result.backend, "PyTorch")
    caption = (f"score >= {_thr_text(score_thr, result.score_thresholds)}; measured on {t['device']} "
               f"({t['device_name']}), batch {t['batch_size']}, {t['threads']} threads ({runtime})")
    exported = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}.get(result.backend)
    model = f"{result.onnx_file.name} ({exported})" if result.onnx_file else result.checkpoint.name
    return table(f"fltool predict: {model}", ["", "value"], rows, caption=caption)


def predict(
    target: Annotated[Path, typer.Argument(help="A checkpoint (.pth) or the work dir of a run (its last "
                                                "checkpoint and the config saved beside it); with --backend "
                                                "onnxruntime or openvino also the .onnx file of fltool export "
                                                "(openvino: also its IR, .xml).",
                                           show_default=False)],
    inputs: Annotated[List[str], typer.Argument(help="Image files, folders (searched recursively), globs "
                                                     "('imgs/*.jpg') and videos OpenCV can read.",
                                                show_default=False)],
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out-dir", help="Output folder: new, empty, or an earlier fltool predict's (only the files it wrote "
                          "are replaced); never an input folder (default: a new work_dirs/predict_<run folder "
                          "name>, _2, _3, ...).")] = None,
    score_thr: Annotated[str, typer.Option("--score-thr", callback=_check_score_thr, help="Keep detections with at "
                                           "least this score; auto: the run's per-class thresholds.json.")] = "0.3",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per model call.")] = 1,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    classes: Annotated[Optional[List[str]], typer.Option(
        "--classes", help="Keep only these classes (names, comma-separated or repeated).",
        show_default=False)] = None,
    stride: Annotated[int, typer.Option("--stride", min=1, help="Videos: predict on every N-th frame.")] = 1,
    no_draw: Annotated[bool, typer.Option("--no-draw", help="Do not write the drawn images.")] = False,
    config: Annotated[Optional[str], typer.Option(
        "--config", help="The config to build the model from (default: the one saved beside the "
                         "checkpoint); for an .onnx file, the config its classes and normalisation must match "
                         "(default: the one its metadata names, if it lies beside the file).",
        show_default=False)] = None,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help="Allow full unpickling of the "
                                                   "checkpoint (only for files you trust).")] = False,
    precision: PrecisionOpt = Precision.fp32,
    backend: Annotated[BackendName, typer.Option("--backend", help="pytorch; onnxruntime or openvino: an .onnx (or "
                                             "for openvino an .xml IR) file of fltool export runs as it is (classes "
                                             "and preprocessing from its metadata); a checkpoint or work dir is "
                                             "exported into the output folder first. openvino: --precision is its "
                                             "inference precision (bf16 only where the CPU has native bf16).")
                       ] = BackendName.pytorch,
) -> None:
    """Detect objects in images and videos with a trained model; write drawn images, label files, a CSV and a
    COCO-results JSON.

    Output folder: <name>.jpg (boxes, class, score drawn), labels/<name>.txt (class x_center y_center width
    height score, normalised), detections.csv (pixels), detections.json (COCO results for all inputs),
    summary.json, .fltool-predict.json (the files predict wrote: a later run may replace those, and no
    other; folders holding it are not read as inputs). A file that cannot be read is named and skipped; the
    exit code is then 1.
    """
    from fltool.deploy.exporter import export_for_onnxruntime
    from fltool.engine.predict import PredictOptions
    from fltool.engine.predict import predict as run_predict

    opts = PredictOptions(target=target, inputs=inputs, out_dir=out_dir, config=config, score_thr=score_thr,
                          batch_size=batch_size, device=device, classes=classes, stride=stride,
                          draw=not no_draw, trust_checkpoint=trust_checkpoint, backend=backend.value,
                          precision=precision.value)
    with ProgressDisplay(err_console) as display:
        result = run_predict(opts, progress=display, exporter=export_for_onnxruntime)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for item, reason in result.failed:
        err_console.print(f"skipped: {item}: {reason}", highlight=False, soft_wrap=True, markup=False)
    console.print(result_table(result, opts.score_thr))
    console.print(f"output:     {result.out_dir}\ndetections: {result.files['detections']}\n"
                  f"rows:       {result.files['rows']}", highlight=False)
    if result.failed:
        item, reason = result.failed[0]
        more = f" (and {len(result.failed) - 1} more, listed above)" if len(result.failed) > 1 else ""
        raise DataError(f"{len(result.failed)} input(s) could not be read: {item}: {reason}{more}",
                        f"the other {result.images} image(s) were predicted and written to {result.out_dir}")
