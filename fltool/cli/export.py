"""``fltool export``: a trained detector as one ONNX graph (image -> boxes, scores, labels), checked against PyTorch."""
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
    rows = [["file", f"{result.onnx_file} ({result.size_bytes / 1e6:.1f} MB)"],
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
            ["opset", str(meta.source.get("opset"))]]
    if getattr(meta, "thresholds", None):  # chosen by fltool analyze pr; predict --score-thr auto applies them
        per = ", ".join(f"{k} {v:.3g}" for k, v in meta.thresholds.get("per_class", {}).items())
        rows.append(["score thresholds", f"{meta.thresholds['overall']:.3g}" + (f" (per class: {per})" if per else "")])
    t = table("fltool export: onnx", ["", "value"], rows)
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
    return table("check: PyTorch vs ONNX Runtime", ["", "PyTorch", "ONNX Runtime"], rows, caption=caption)


def export(
    target: Annotated[Path, typer.Argument(help="A checkpoint (.pth) or the work dir `fltool train` wrote (its "
                                                "last checkpoint).", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="Output format (onnx).")] = "onnx",
    img_size: Annotated[Optional[Tuple[int, int]], typer.Option(
        "--img-size", help="A fixed input size H W (the image is resized, then padded to it). Default: any size "
                           "(--dynamic).", show_default=False)] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Any input height and width (the default).")] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (11-20).")] = 17,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output file (default: the checkpoint's name "
                                                "with .onnx, beside it).")] = None,
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
) -> None:
    """Export a trained RetinaNet as one ONNX graph: image tensor -> boxes, scores, labels.

    The graph holds the backbone, FPN, both subnets, anchors, box decoding, the per-level top-k, the score
    threshold and class-aware NMS (the config's test_cfg); class names and preprocessing are in its metadata.
    The file is checked with onnx.checker, then against the PyTorch model with ONNX Runtime on the test set.
    """
    if img_size is not None and dynamic:
        raise ConfigError("--img-size and --dynamic both given", "give --img-size H W (fixed) or --dynamic "
                                                               "(any size), not both")
    from fltool.deploy.onnx_export import ExportOptions, export_onnx

    opts = ExportOptions(target=target, out=out, img_size=img_size, opset=opset, config=config,
                         cfg_options=cfg_options, check=check, check_images=check_images, format=format,
                         trust_checkpoint=trust_checkpoint)
    with ProgressDisplay(err_console) as display:
        result = export_onnx(opts, progress=display)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print(export_table(result))
    if result.check is not None:
        console.print(check_table(result.check))
    console.print(f"model:  {result.onnx_file}\nreport: {result.report_file}", highlight=False)
    if result.check is not None and not result.check.ok:
        raise FltoolError(f"the exported graph disagrees with PyTorch ({result.check.unmatched} unmatched "
                          f"detections, AP difference {result.check.ap_diff:.3f}); {result.onnx_file} is kept "
                          "for inspection", "report it with the config and checkpoint")
