"""``fltool export``: a trained detector as one ONNX graph (image -> boxes, scores, labels), or as an OpenVINO IR
(also bf16 and INT8), checked against PyTorch."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

import typer
from typing_extensions import Annotated

from fltool.cli.common import CfgOptionsOpt, console, err_console, table
from fltool.cli.progress import ProgressDisplay
from fltool.errors import ConfigError, FltoolError


def export_table(result: Any) -> Any:
    meta = result.meta
    post = meta.postprocess
    prep = meta.preprocess
    fixed = meta.fixed_hw
    files = str(result.model_file) + (f" + {result.model_file.with_suffix('.bin').name}" if result.format == "openvino"
                                      else "")
    rows = [["file", f"{files} ({result.size_bytes / 1e6:.1f} MB)"],
            ["from", f"{result.checkpoint.name} ({result.config.name if result.config else 'its stored config'})"],
            ["input", f"image (1, 3, {fixed[0]}, {fixed[1]}) float32" if fixed else
             "image (1, 3, H, W) float32, any H x W (padded inside to a multiple of "
             f"{prep['size_divisor']})"],
            ["outputs", "boxes (N, 4) in input pixels, scores (N,), labels (N,)"],
            ["classes", ", ".join(meta.classes)],
            ["preprocess", f"resize {prep['resize']['scale'][0]}x{prep['resize']['scale'][1]} (w x h"
                           f"{', keep ratio' if prep['resize']['keep_ratio'] else ''}), "
                           f"{'BGR->RGB, ' if prep['bgr_to_rgb'] else ''}mean "
                           f"{', '.join(f'{v:g}' for v in prep['mean'])}, "
                           f"std {', '.join(f'{v:g}' for v in prep['std'])}"],
            ["in the graph", f"top {post['nms_pre']} per level, score > {post['score_thr']:g}, class-aware NMS at IoU "
                             f"{post['iou_threshold']:g}, at most {post['max_per_img']} detections"],
            ["opset", str(meta.source.get("opset")) + (f" (converted by OpenVINO {meta.source.get('openvino')})"
                                                       if result.format == "openvino" else "")]]
    if getattr(meta, "thresholds", None):  # chosen by fltool analyze pr; predict --score-thr auto applies them
        per = ", ".join(f"{k} {v:.3g}" for k, v in meta.thresholds.get("per_class", {}).items())
        rows.append(["score thresholds", f"{meta.thresholds['overall']:.3g}" + (f" (per class: {per})" if per else "")])
    t = table(f"fltool export: {result.format}", ["", "value"], rows)
    t.columns[1].justify = "left"
    return t


def check_table(report: Any) -> Any:
    rows = [["images (test set)", report.num_images, report.num_images],
            ["detections", report.detections_pytorch, report.detections_onnx],
            ["AP", report.metrics_pytorch.get("AP"), report.metrics_onnx.get("AP")]]
    caption = (f"{report.matched} detections matched (same label, IoU >= {report.iou_min}, score within "
               f"{report.score_tol:g}; worst IoU {report.min_iou:.5f}, worst score difference "
               f"{report.max_score_diff:.1e}), {report.borderline} borderline, {report.unmatched} unmatched; AP "
               f"difference {report.ap_diff:.3f} (limit {report.ap_tol}): {'PASS' if report.ok else 'FAIL'}")
    runtime = getattr(report, "runtime", "ONNX Runtime")
    return table(f"check: PyTorch vs {runtime}", ["", "PyTorch", runtime], rows, caption=caption)


def precision_table(result: Any) -> Any:
    """--format openvino: each precision's file and COCO metrics on the val split (the check's images)."""
    def pct(metrics: Any, key: str) -> Any:
        value = (metrics or {}).get(key)
        return None if value is None else f"{100 * value:.1f}"

    ref = (result.precisions.get("fp32") or {}).get("metrics") or {}
    rows = []
    for name, entry in result.precisions.items():
        metrics = entry.get("metrics") or {}
        drop = "" if name == "fp32" else None if metrics.get("AP") is None or ref.get("AP") is None else \
            f"{100 * (metrics['AP'] - ref['AP']):+.1f}"
        where = Path(entry["file"]).name if entry.get("file") else "not written"
        rows.append([name, where, pct(metrics, "AP"), pct(metrics, "AP50"), pct(metrics, "AP75"), drop,
                     entry.get("note")])
    t = table("precisions: COCO AP (%) on the val split, OpenVINO", ["precision", "file", "AP", "AP50", "AP75",
                                                                    "vs fp32", "note"], rows)
    t.columns[-1].justify = "left"
    return t


def export(
    target: Annotated[Path, typer.Argument(help="A checkpoint (.pth) or the work dir `fltool train` wrote (its "
                                                "last checkpoint).", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="Output format: onnx, or openvino (an IR: .xml + .bin; pip "
                                        "install 'fltool[openvino]').")] = "onnx",
    img_size: Annotated[Optional[Tuple[int, int]], typer.Option(
        "--img-size", help="A fixed input size H W (the image is resized, then padded to it). Default: any size "
                           "(--dynamic).", show_default=False)] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Any input height and width (the default).")] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (11-20).")] = 17,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output file (default: the checkpoint's name "
                                                "with .onnx, or .xml for openvino, beside it).")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="The config the checkpoint was trained "
                                                  "with (default: the one in its work dir or its metadata).")
                      ] = None,
    cfg_options: CfgOptionsOpt = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Compare the file with the PyTorch model "
                                        "on the test set (detections and COCO AP).")] = True,
    check_images: Annotated[Optional[int], typer.Option("--check-images", min=1, help="Check on the first N "
                                                        "test images only (default: all).")] = None,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help="Allow full unpickling of the "
                                                   "checkpoint (only for files you trust).")] = False,
    precision: Annotated[str, typer.Option("--precision", help="openvino: precisions to report, comma-separated: "
                                           "fp32 (the IR, always), bf16 (the IR run in bf16, where the CPU has "
                                           "native bf16), int8 (NNCF quantization with accuracy control, written "
                                           "as <name>_int8.xml); each one's AP on the val split.")] = "fp32",
    calib_images: Annotated[int, typer.Option("--calib-images", min=1, help="int8: training images to "
                                              "calibrate on (the test pipeline's preprocessing).")] = 100,
    max_ap_drop: Annotated[float, typer.Option("--max-ap-drop", min=0.0, help="int8: the most AP "
                                               "(points) the INT8 model may lose against fp32 on the val split; "
                                               "NNCF keeps the costliest layers in float to stay within it.")
                           ] = 1.0,
) -> None:
    """Export a trained RetinaNet as one ONNX graph: image tensor -> boxes, scores, labels.

    The graph holds the backbone, FPN, both subnets, anchors, box decoding, the per-level top-k, the score
    threshold and class-aware NMS (the config's test_cfg); class names and preprocessing are in its metadata.
    The file is checked with onnx.checker, then against the PyTorch model with ONNX Runtime on the test set.
    With --format openvino the graph is written as an OpenVINO IR (the same metadata in its rt_info), checked with
    OpenVINO, and --precision bf16,int8 adds each precision's AP on the val split (and the INT8 IR).
    """
    if img_size is not None and dynamic:
        raise ConfigError("--img-size and --dynamic both given", "give --img-size H W (fixed) or --dynamic "
                                                               "(any size), not both")
    from fltool.deploy.onnx_export import ExportOptions, export_onnx

    opts = ExportOptions(target=target, out=out, img_size=img_size, opset=opset, config=config,
                         cfg_options=cfg_options, check=check, check_images=check_images, format=format,
                         trust_checkpoint=trust_checkpoint, precision=precision, calib_images=calib_images,
                         max_ap_drop=max_ap_drop)
    with ProgressDisplay(err_console) as display:
        result = export_onnx(opts, progress=display)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print(export_table(result))
    if result.check is not None:
        console.print(check_table(result.check))
    if result.precisions and (len(result.precisions) > 1 or result.check is not None):
        console.print(precision_table(result))
    int8 = (result.precisions.get("int8") or {}).get("file")
    console.print(f"model:  {result.model_file}" + (f"\nint8:   {int8}" if int8 else "") +
                  f"\nreport: {result.report_file}", highlight=False)
    if result.check is not None and not result.check.ok:
        raise FltoolError(f"the exported graph disagrees with PyTorch ({result.check.unmatched} unmatched "
                          f"detections, AP difference {result.check.ap_diff:.3f}); {result.model_file} is kept "
                          "for inspection", "report it with the config and checkpoint")
    if result.int8_error:
        raise FltoolError(f"{result.int8_error}; no INT8 model was written, the fp32 IR {result.model_file} is kept",
                          "allow a larger drop (--max-ap-drop) or calibrate on more images (--calib-images)")
