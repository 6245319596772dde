"""``fltool analyze errors`` and ``fltool analyze pr``: why a detector misses, and what threshold to ship. Thin
wrappers over fltool.analysis.errors_report and fltool.analysis.pr_report; fltool.cli.main joins them to the
``analyze`` group."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from fltool.cli.common import CfgOptionsOpt, TrustOpt, console, err_console, fmt, table
from fltool.cli.dataopts import DataOpt, FormatOpt, ImgSizeOpt, ValFractionOpt, data_options, with_data
from fltool.cli.progress import ProgressDisplay

TargetArg = Annotated[str, typer.Argument(
    help="A run: its work dir or a checkpoint (the config beside it or stored in it); or a config file or name, "
         "with CHECKPOINT.", show_default=False)]
OptionalCheckpointArg = Annotated[Optional[Path], typer.Argument(
    help="The checkpoint (.pth), when TARGET is a config.", show_default=False)]
AnalysisDirOpt = Annotated[Optional[Path], typer.Option(
    "--work-dir", help="Output folder (default: <run folder>/analysis, where fltool compare finds it).")]
IouOpt = Annotated[float, typer.Option(
    "--iou", help="Foreground IoU t_f (TIDE's pos_threshold), one of COCO's 0.5, 0.55, ..., 0.95: 0.75 breaks down "
                  "AP75, where a box found at IoU 0.5-0.75 is a localisation error. Files: errors_iou75.*.")]


def _detection_options(target: str, checkpoint: Optional[Path], work_dir: Optional[Path], cfg_options: Any,
                       trust: bool, data_opts: Any, display: Any) -> Any:
    """The run's config and checkpoint (on ``--data`` if given) and the output folder."""
    from fltool.analysis.detections import DetectionsOptions, default_work_dir, resolve_target

    config, ckpt = resolve_target(target, checkpoint, trust)
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(ckpt)
    config, work_dir = with_data(config, data_opts, work_dir, display)
    return DetectionsOptions(config=config, checkpoint=ckpt, work_dir=Path(work_dir), cfg_options=cfg_options,
                             trust_checkpoint=trust)


def _notes(notes: list) -> None:
    for note in notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)


def _files(files: dict) -> None:
    width = max(len(k) for k in files) + 1 if files else 0
    for key, path in files.items():
        console.print(f"{key + ':':<{width}} {path}", highlight=False, soft_wrap=True)


def errors(
    target: TargetArg,
    checkpoint: OptionalCheckpointArg = None,
    work_dir: AnalysisDirOpt = None,
    cfg_options: CfgOptionsOpt = None,
    trust_checkpoint: TrustOpt = False,
    data: DataOpt = None,
    data_format: FormatOpt = None,
    val_fraction: ValFractionOpt = None,
    img_size: ImgSizeOpt = None,
    iou: IouOpt = 0.5,
) -> None:
    """Why the detector misses: TIDE's error breakdown (Bolya et al., ECCV 2020) of AP50, overall and per class.

    Every false positive at IoU 0.5 is a classification (Cls), localisation (Loc), both (Both), duplicate (Dupe) or
    background (Bkg) error, and every box nothing found is missed (Miss) (foreground IoU 0.5, background IoU 0.1);
    each type's dAP is the AP50 gained by fixing its errors (TIDE's oracles), with the AP50 lost to all false
    positives and all false negatives. Detections come from fltool eval's path, matching from pycocotools.

    Writes errors.json, errors.csv (per class), errors_detail.csv (every error) and errors.png (bar chart). With
    --iou 0.75 the same breakdown of AP75 (a box found at IoU 0.5-0.75 is a Loc error) into errors_iou75.*.
    """
    from fltool.analysis.errors import ERROR_NAMES, ERROR_TYPES, SPECIAL_TYPES, check_fg_iou
    from fltool.analysis.errors_report import run_error_analysis, save_errors

    data_opts = data_options(data, data_format, val_fraction, img_size)
    iou = check_fg_iou(iou)
    with ProgressDisplay(err_console) as display:
        opts = _detection_options(target, checkpoint, work_dir, cfg_options, trust_checkpoint, data_opts, display)
        result = run_error_analysis(opts, progress=display, fg_iou=iou)
    files = save_errors(result, opts.work_dir)
    _notes(result.notes)
    b, ev = result.breakdown, result.evaluated
    rows = [[k, ERROR_NAMES[k], b.counts.get(k, ""), _dap(b.dap.get(k))] for k in ERROR_TYPES + SPECIAL_TYPES]
    name = b.ap_name
    caption = (f"{name} {fmt(b.ap)} on {len(ev.img_ids)} images of {ev.ann_file.name}; all six fixed: {name} "
               f"{fmt(b.ap_all_fixed)}; dAP in AP points (x100); {result.wall_s:.0f} s")
    overall = table(f"fltool analyze errors: {ev.checkpoint.name}", ["type", "what", "errors", f"d{name}"], rows,
                    caption=caption)
    overall.columns[1].justify = "left"
    console.print(overall)
    per_class = [[cls_name, b.per_class[c][name], b.per_class[c]["n_gt"]] +
                 [_dap(b.per_class[c]["dAP"].get(k), 1) for k in ERROR_TYPES + SPECIAL_TYPES]
                 for c, cls_name in zip(b.cat_ids, b.classes)]
    console.print(table(f"d{name} per class (x100; FP, FN: all false positives, negatives)",
                        ["class", name, "GT", *ERROR_TYPES, "FP", "FN"], per_class))
    _files(files)


def _dap(value: Optional[float], digits: int = 2) -> str:
    """A dAP in AP points (x100)."""
    return "n/a" if value is None else f"{value * 100:.{digits}f}"


def pr(
    target: TargetArg,
    checkpoint: OptionalCheckpointArg = None,
    score_thr: Annotated[Optional[float], typer.Option(
        "--score-thr", min=0.0, max=1.0, help="Report P/R/F1, the confusion matrix and the gallery at this one "
                                              "threshold (default: each class's F1-optimal one).",
        show_default=False)] = None,
    gallery: Annotated[int, typer.Option("--gallery", min=0, help="How many of the worst images to draw.")] = 6,
    write_thresholds: Annotated[bool, typer.Option(
        "--write-thresholds/--no-write-thresholds", help="Keep the F1-optimal thresholds in the run as "
                                                         "thresholds.json (for predict --score-thr auto and "
                                                         "export).")] = True,
    work_dir: AnalysisDirOpt = None,
    cfg_options: CfgOptionsOpt = None,
    trust_checkpoint: TrustOpt = False,
    data: DataOpt = None,
    data_format: FormatOpt = None,
    val_fraction: ValFractionOpt = None,
    img_size: ImgSizeOpt = None,
) -> None:
    """What threshold to ship: per-class metrics, PR curves, P/R/F1 against the confidence, the F1-optimal
    thresholds, a confusion matrix and the worst images.

    Per class: AP, AP50, AP75, APs/m/l, ground-truth boxes, detections, and precision, recall and F1 at the class's
    F1-optimal confidence (IoU 0.5). The thresholds go into the run as thresholds.json, which
    `fltool predict --score-thr auto` applies per class and `fltool export` carries into the ONNX metadata.

    Writes per_class.csv, pr_curves.csv/.png (IoU 0.5 and 0.75), f1_confidence.csv/.png, confusion.csv,
    confusion_normalised.csv, confusion.png (background row and column), gallery.png and pr.json.
    """
    from fltool.analysis.pr_report import PrOptions, run_pr_analysis, save_pr

    data_opts = data_options(data, data_format, val_fraction, img_size)
    with ProgressDisplay(err_console) as display:
        opts = _detection_options(target, checkpoint, work_dir, cfg_options, trust_checkpoint, data_opts, display)
        result = run_pr_analysis(PrOptions(opts, score_thr, write_thresholds), progress=display)
    files = save_pr(result, opts.work_dir, gallery)
    _notes(result.notes)
    _print_pr(result)
    _files(files)


def _print_pr(result: Any) -> None:
    a, ev, m = result.analysis, result.evaluated, result.confusion
    rows = result.class_rows()
    coco = [[r["cls"], r["AP"], r["AP50"], r["AP75"], r["APs"], r["APm"], r["APl"], r["n_gt"], r["detections"]]
            for r in rows]
    console.print(table(f"fltool analyze pr: {ev.checkpoint.name}", ["class", "AP", "AP50", "AP75", "APs", "APm",
                                                                     "APl", "GT", "detections"], coco,
                        caption=f"COCO bbox on {len(ev.img_ids)} images of {ev.ann_file.name}"))
    at = [[r["cls"], "per class" if r["threshold"] is None else f"{r['threshold']:.3f}{'' if r['chosen'] else '*'}",
           r["precision"], r["recall"], r["f1"], r["pr_area50"]] for r in rows]
    best = a.overall
    caption = ("keeping score >= thr (" + ("--score-thr" if a.fixed_thr is not None else "each class's F1-optimal; "
                                           "* the overall one") + "); F1-optimal overall: "
               + (f"{best.threshold:.3f} (P {best.precision:.3f}, R {best.recall:.3f}, F1 {best.f1:.3f})"
                  if best else "none"))
    console.print(table("precision, recall, F1 at IoU 0.5", ["class", "thr", "P", "R", "F1", "PR area"], at,
                        caption=caption))
    console.print(table("confusion matrix (rows: ground truth, columns: prediction; IoU 0.5)",
                        ["", *m.labels], [[label, *(int(v) for v in row)] for label, row in zip(m.labels, m.matrix)]))
    if result.thresholds_file is not None:
        console.print(f"thresholds: {result.thresholds.describe(ev.classes)} -> {result.thresholds_file} "
                      f"(fltool predict --score-thr auto)", highlight=False, soft_wrap=True)
