"""``fltool analyze errors``: the model's detections through fltool's evaluation, then TIDE's breakdown
(:mod:`fltool.analysis.errors`) written as JSON, CSV (per class, and one row per error) and a bar chart."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fltool.analysis.detections import DetectionsOptions, Evaluated, evaluate_detections
from fltool.analysis.errors import ERROR_TYPES, FG_IOU, SPECIAL_TYPES, ErrorBreakdown, check_fg_iou, error_breakdown
from fltool.analysis.tables import class_colours, pyplot, write_csv
from fltool.fileio import save_figure, write_json
from fltool.progress import ProgressEvent, ProgressFn, no_progress


@dataclass
class ErrorsResult:
    evaluated: Evaluated
    breakdown: ErrorBreakdown
    files: dict = field(default_factory=dict)
    wall_s: float = 0.0
    notes: list = field(default_factory=list)


def run_error_analysis(opts: DetectionsOptions, progress: ProgressFn = no_progress,
                       fg_iou: float = FG_IOU) -> ErrorsResult:
    """Evaluate (fltool eval's path), then break the AP lost at foreground IoU ``fg_iou`` (AP50 by default) down by
    TIDE's error types."""
    fg_iou = check_fg_iou(fg_iou)  # before the evaluation: a wrong --iou costs no time
    start = time.time()
    evaluated = evaluate_detections(opts, progress)
    progress(ProgressEvent("stage", "TIDE error breakdown"))
    breakdown = error_breakdown(evaluated.gt, evaluated.detections, evaluated.cat_ids, evaluated.classes,
                                fg_iou=fg_iou)
    notes = list(evaluated.notes)
    if breakdown.ap is None:
        notes.append("the split has no ground truth of the model's classes: no AP to break down")
    return ErrorsResult(evaluated, breakdown, wall_s=time.time() - start, notes=notes)


def errors_stem(fg_iou: float) -> str:
    """``errors`` at the default foreground IoU, ``errors_iou75`` at 0.75: the breakdowns at two IoUs sit side by
    side in one folder (``fltool compare`` reads ``errors.json``)."""
    return "errors" if fg_iou == FG_IOU else f"errors_iou{round(fg_iou * 100)}"


def save_errors(result: ErrorsResult, out_dir: Path) -> dict:
    """errors.json, errors.csv (overall and per class), errors_detail.csv (one row per error), errors.png (their
    stem ``errors_iouNN`` at another foreground IoU)."""
    out_dir = Path(out_dir)
    b, ev = result.breakdown, result.evaluated
    stem, name = errors_stem(b.fg_iou), b.ap_name
    kinds = ERROR_TYPES + SPECIAL_TYPES
    header = ["class", name, "ground_truth", "detections"] + [f"dAP_{k}" for k in kinds] + \
        [f"n_{k}" for k in ERROR_TYPES]
    rows = [["all", b.ap, sum(r["n_gt"] for r in b.per_class.values()),
             sum(r["detections"] for r in b.per_class.values())] + [b.dap.get(k) for k in kinds] +
            [b.counts[k] for k in ERROR_TYPES]]
    for cat, cls_name in zip(b.cat_ids, b.classes):
        row = b.per_class[cat]
        rows.append([cls_name, row[name], row["n_gt"], row["detections"]] + [row["dAP"].get(k) for k in kinds] +
                    [row["counts"][k] for k in ERROR_TYPES])
    files = {"csv": write_csv(out_dir / f"{stem}.csv", header, rows),
             "detail_csv": write_detail(result, out_dir / f"{stem}_detail.csv"),
             "png": plot_errors(b, out_dir / f"{stem}.png", f"{ev.checkpoint.name} on {ev.ann_file.name} "
                                                            f"({len(ev.img_ids)} images)")}
    record = dict(b.as_dict(), source=ev.source(), eval_metrics=ev.metrics, notes=result.notes,
                  wall_s=round(result.wall_s, 1))
    files["json"] = write_json(out_dir / f"{stem}.json", dict(record, files={k: str(v) for k, v in files.items()}))
    result.files = files
    return files


def write_detail(result: ErrorsResult, path: Path) -> Path:
    """One row per error: the image, the type, the detection (class, score, box) and the box it concerns."""
    b, ev = result.breakdown, result.evaluated
    names = dict(zip(b.cat_ids, b.classes))
    files = {img["id"]: img.get("file_name", "") for img in ev.gt.get("images", [])}
    boxes = {ann["id"]: ann["bbox"] for ann in ev.gt.get("annotations", [])}
    rows = []
    for e in b.errors:
        det = ev.detections[e.det] if e.det >= 0 else None
        rows.append([files.get(e.image_id, e.image_id), e.kind, names.get(e.cat_id, e.cat_id),
                     None if det is None else float(det["score"]),
                     None if det is None else " ".join(f"{v:.1f}" for v in det["bbox"]),
                     names.get(e.gt_cat) if e.gt else None,
                     " ".join(f"{v:.1f}" for v in boxes[e.gt]) if e.gt in boxes else None,
                     None if det is None else e.iou, e.fixes if e.kind in ("Cls", "Loc") else None])
    return write_csv(path, ["file", "type", "class", "score", "box_xywh", "gt_class", "gt_box_xywh", "iou",
                            "oracle_makes_true_positive"], rows)


TICK_NAMES = {"Cls": "class", "Loc": "box", "Both": "class+box", "Dupe": "duplicate", "Bkg": "background",
              "Miss": "missed", "FalsePos": "all FP", "FalseNeg": "all FN"}


def plot_errors(b: ErrorBreakdown, path: Path, title: str) -> Path:
    """Left: dAP of each type overall (the six, then all false positives / negatives); right: per class."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [1, 1.4]})
    kinds = ERROR_TYPES + SPECIAL_TYPES
    values = [b.dap.get(k) or 0.0 for k in kinds]
    colours = ["#d62728", "#ff7f0e", "#bcbd22", "#9467bd", "#8c564b", "#7f7f7f", "#1f77b4", "#17becf"]
    bars = axes[0].bar(range(len(kinds)), values, color=colours)
    axes[0].bar_label(bars, labels=[f"{v * 100:.1f}" for v in values], fontsize=8)
    axes[0].set_xticks(range(len(kinds)), [f"{k}\n{TICK_NAMES[k]}" for k in kinds], fontsize=7)
    ap = "n/a" if b.ap is None else f"{b.ap:.3f}"
    axes[0].set(ylabel=f"d{b.ap_name} (AP gained by fixing)", title=f"overall: {b.ap_name} {ap}, all six fixed: "
                f"{'n/a' if b.ap_all_fixed is None else f'{b.ap_all_fixed:.3f}'}")
    width = 0.8 / max(len(b.cat_ids), 1)
    for i, (cat, name, colour) in enumerate(zip(b.cat_ids, b.classes, class_colours(len(b.cat_ids)))):
        dap = b.per_class[cat]["dAP"]
        axes[1].bar(np.arange(len(ERROR_TYPES)) + (i - (len(b.cat_ids) - 1) / 2) * width,
                    [dap.get(k) or 0.0 for k in ERROR_TYPES], width, color=colour,
                    label=f"{name} ({b.ap_name} {b.per_class[cat][b.ap_name] or 0:.3f})")
    axes[1].set_xticks(range(len(ERROR_TYPES)), list(ERROR_TYPES))
    axes[1].set(ylabel=f"d{b.ap_name} of the class", title="per class")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.title.set_fontsize(9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"TIDE errors (IoU fg {b.fg_iou:g}, bg 0.1): {title}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
