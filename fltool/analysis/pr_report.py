"""``fltool analyze pr``: the model's detections through fltool's evaluation, then per-class metrics, PR curves,
precision/recall/F1 against the confidence, the F1-optimal thresholds (written into the run as thresholds.json for
``fltool predict --score-thr auto`` and ``fltool export``), the confusion matrix and the worst images, each as a
file (JSON, CSV, PNG)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from fltool.analysis.confusion import Confusion, confusion, image_tables
from fltool.analysis.detections import DetectionsOptions, Evaluated, evaluate_detections
from fltool.analysis.gallery import save_gallery
from fltool.analysis.matching import run_cocoeval
from fltool.analysis.pr import (
    FALLBACK_THR,
    PrAnalysis,
    curve_area,
    pr_analysis,
    pr_points,
    precision_envelope,
    threshold_curve,
)
from fltool.analysis.tables import class_colours, pyplot, write_csv
from fltool.engine.thresholds import Thresholds, write_thresholds
from fltool.fileio import save_figure, write_json
from fltool.progress import ProgressEvent, ProgressFn, no_progress


@dataclass
class PrOptions:
    detections: DetectionsOptions
    score_thr: Optional[float] = None  # one threshold for the table, matrix and gallery instead of the chosen ones
    write_thresholds: bool = True  # thresholds.json into the run (the checkpoint's folder)


@dataclass
class PrResult:
    evaluated: Evaluated
    analysis: PrAnalysis
    confusion: Confusion
    thresholds: Optional[Thresholds]  # the F1-optimal ones (None: no detection ever matches)
    thresholds_file: Optional[Path] = None
    files: dict = field(default_factory=dict)  # what -> path, once saved
    wall_s: float = 0.0
    notes: list = field(default_factory=list)

    def class_rows(self) -> list:
        """One dict per class, then the overall one: the table ``fltool analyze pr`` prints and writes."""
        a = self.analysis
        rows = []
        for c in a.classes:
            op = a.at_thresholds[c.name]
            rows.append(dict(cls=c.name, **a.per_class_metrics[c.name], n_gt=c.n_gt, detections=len(c.scores),
                             threshold=a.thresholds[c.name], chosen=c.name in a.chosen and a.fixed_thr is None,
                             precision=op.precision, recall=op.recall, f1=op.f1,
                             pr_area50=curve_area(c.tp50, c.n_gt), pr_area75=curve_area(c.tp75, c.n_gt)))
        pooled = a.at_thresholds["all"]
        rows.append(dict(cls="all", **a.metrics, n_gt=sum(c.n_gt for c in a.classes),
                         detections=sum(len(c.scores) for c in a.classes), threshold=None, chosen=False,
                         precision=pooled.precision, recall=pooled.recall, f1=pooled.f1,
                         pr_area50=_mean([r["pr_area50"] for r in rows]),
                         pr_area75=_mean([r["pr_area75"] for r in rows])))
        return rows


def _mean(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def chosen_thresholds(analysis: PrAnalysis, source: dict) -> Optional[Thresholds]:
    """The F1-optimal thresholds as kept in the run (None where no detection ever matches)."""
    if analysis.overall is None:
        return None
    return Thresholds(analysis.overall.threshold, {name: op.threshold for name, op in analysis.chosen.items()},
                      source=dict(source, iou=0.5))


def run_pr_analysis(opts: PrOptions, progress: ProgressFn = no_progress) -> PrResult:
    """Evaluate (fltool eval's path), analyse, and keep the chosen thresholds in the run."""
    start = time.time()
    evaluated = evaluate_detections(opts.detections, progress)
    progress(ProgressEvent("stage", "precision-recall analysis"))
    evaluator = run_cocoeval(evaluated.gt, evaluated.detections, evaluated.cat_ids)
    analysis = pr_analysis(evaluated.gt, evaluated.detections, evaluated.cat_ids, evaluated.classes,
                           opts.score_thr, evaluator)
    thr = [analysis.thresholds[name] for name in evaluated.classes]
    matrix = confusion(evaluated.gt, evaluated.detections, evaluated.cat_ids, evaluated.classes, thr)
    thresholds = chosen_thresholds(analysis, evaluated.source())
    result = PrResult(evaluated, analysis, matrix, thresholds, notes=evaluated.notes + analysis.notes)
    if thresholds is not None and opts.write_thresholds:
        result.thresholds_file = write_thresholds(evaluated.checkpoint.parent, thresholds)
    elif thresholds is None:
        result.notes.append(f"no thresholds written: no detection matches a ground-truth box (tables at "
                            f"{FALLBACK_THR})")
    result.wall_s = time.time() - start
    return result


def save_pr(result: PrResult, out_dir: Path, gallery: int = 6) -> dict:
    """Write every table and figure into ``out_dir``; returns what -> path."""
    out_dir = Path(out_dir)
    a, ev = result.analysis, result.evaluated
    rows = result.class_rows()
    files = {"per_class_csv": write_csv(out_dir / "per_class.csv", list(rows[0]), [list(r.values()) for r in rows]),
             "pr_curves_csv": _write_pr_csv(a, out_dir / "pr_curves.csv"),
             "f1_confidence_csv": _write_f1_csv(a, out_dir / "f1_confidence.csv"),
             "confusion_csv": _write_confusion_csv(result.confusion, out_dir)}
    files["pr_curves_png"] = plot_pr_curves(a, out_dir / "pr_curves.png")
    files["f1_confidence_png"] = plot_f1_confidence(a, out_dir / "f1_confidence.png")
    files["confusion_png"] = plot_confusion(result.confusion, out_dir / "confusion.png", _thr_caption(a))
    worst = result.confusion.worst(gallery)
    tables = image_tables(ev.gt, ev.detections, ev.cat_ids)
    names = {img["id"]: img.get("file_name", "") for img in ev.gt.get("images", [])}
    png = save_gallery(out_dir / "gallery.png", worst, tables, names, ev.img_dir, ev.classes) if worst else None
    if png is not None:
        files["gallery_png"] = png
    elif worst:
        result.notes.append(f"no gallery: the images of {ev.ann_file.name} were not found under {ev.img_dir}")
    record = summary(result, [{"file": names.get(o.image_id), "false_positives": o.false_positives,
                               "missed": o.misses} for o in worst])
    files["json"] = write_json(out_dir / "pr.json", dict(record, files={k: str(v) for k, v in files.items()}))
    result.files = files
    return files


def _thr_caption(a: PrAnalysis) -> str:
    if a.fixed_thr is not None:
        return f"score >= {a.fixed_thr:g}"
    return "score >= each class's F1-optimal threshold"


def summary(result: PrResult, worst: list) -> dict:
    """pr.json: the table, the thresholds, the matrix and the worst images, with where they came from."""
    a, m = result.analysis, result.confusion
    return {"source": result.evaluated.source(), "eval_metrics": result.evaluated.metrics, "metrics": a.metrics,
            "per_class": {r["cls"]: {k: v for k, v in r.items() if k != "cls"} for r in result.class_rows()},
            "f1_optimal": {"overall": a.overall.as_dict() if a.overall else None,
                           "per_class": {name: op.as_dict() for name, op in a.chosen.items()}},
            "applied_thresholds": dict(a.thresholds), "fixed_thr": a.fixed_thr,
            "at_applied_thresholds": {k: op.as_dict() for k, op in a.at_thresholds.items()},
            "thresholds": result.thresholds.as_dict() if result.thresholds else None,
            "thresholds_file": str(result.thresholds_file) if result.thresholds_file else None,
            "confusion": {"labels": m.labels, "rows": "ground truth", "columns": "prediction", "iou": 0.5,
                          "counts": m.matrix.tolist(), "normalised_by_row": m.normalised.round(6).tolist()},
            "worst_images": worst, "notes": result.notes, "wall_s": round(result.wall_s, 1)}


def _write_pr_csv(a: PrAnalysis, path: Path) -> Path:
    rows = []
    for c in a.classes:
        for iou, tp in ((0.5, c.tp50), (0.75, c.tp75)):
            scores = c.scores if iou == 0.5 else c.scores75
            precision, recall = pr_points(tp, c.n_gt)
            for i, (s, p, r, e) in enumerate(zip(scores, precision, recall, precision_envelope(precision))):
                rows.append([c.name, iou, i + 1, float(s), bool(tp[i]), float(p), float(r), float(e)])
    return write_csv(path, ["class", "iou", "rank", "score", "true_positive", "precision", "recall",
                            "precision_envelope"], rows)


def _write_f1_csv(a: PrAnalysis, path: Path) -> Path:
    rows = []
    curves = [(c.name, c.scores, c.tp50, c.n_gt) for c in a.classes] + [("all", *a.pooled())]
    for name, scores, tp, n_gt in curves:
        curve = threshold_curve(scores, tp, n_gt)
        for i in range(len(curve["threshold"])):
            rows.append([name] + [curve[k][i].item() for k in ("threshold", "precision", "recall", "f1",
                                                               "true_positives", "detections")])
    return write_csv(path, ["class", "threshold", "precision", "recall", "f1", "true_positives", "detections"], rows)


def _write_confusion_csv(m: Confusion, out_dir: Path) -> Path:
    header = ["ground truth \\ prediction", *m.labels]
    write_csv(out_dir / "confusion_normalised.csv", header,
              [[label, *(float(v) for v in row)] for label, row in zip(m.labels, m.normalised)])
    return write_csv(out_dir / "confusion.csv", header,
                     [[label, *(int(v) for v in row)] for label, row in zip(m.labels, m.matrix)])


def plot_pr_curves(a: PrAnalysis, path: Path) -> Path:
    """Precision (envelope) against recall per class at IoU 0.5 and 0.75."""
    plt = pyplot()
    colours = class_colours(len(a.classes))
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.4))
    for ax, iou in zip(axes, (0.5, 0.75)):
        for colour, c in zip(colours, a.classes):
            tp = c.tp50 if iou == 0.5 else c.tp75
            precision, recall = pr_points(tp, c.n_gt)
            key = "AP50" if iou == 0.5 else "AP75"
            ap = a.per_class_metrics[c.name].get(key)
            label = f"{c.name} ({key} {ap:.3f})" if ap is not None else f"{c.name} (no ground truth)"
            ax.step(np.concatenate([[0.0], recall]), np.concatenate([[1.0 if len(recall) else 0.0],
                                                                     precision_envelope(precision)]),
                    where="pre", color=colour, label=label, linewidth=1.5)
        ax.set(xlim=(0, 1.01), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"IoU {iou:g}: AP{int(iou * 100)} {a.metrics.get('AP50' if iou == 0.5 else 'AP75') or 0:.3f}")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_f1_confidence(a: PrAnalysis, path: Path) -> Path:
    """Precision, recall and F1 against the confidence threshold; the F1-optimal points marked."""
    plt = pyplot()
    colours = class_colours(len(a.classes))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    curves = [(c.name, c.scores, c.tp50, c.n_gt, colour, 1.2) for c, colour in zip(a.classes, colours)]
    curves.append(("all", *a.pooled(), "black", 2.4))
    for name, scores, tp, n_gt, colour, width in curves:
        curve = threshold_curve(scores, tp, n_gt)
        best = a.overall if name == "all" else a.chosen.get(name)
        for ax, key in zip(axes, ("precision", "recall", "f1")):
            ax.step(curve["threshold"], curve[key], where="post", color=colour, linewidth=width,
                    label=f"{name} (best F1 at {best.threshold:.2f})" if best else name)
            if best is not None:
                ax.plot([best.threshold], [getattr(best, key)], "o", color=colour, markersize=5)
    for ax, key in zip(axes, ("precision", "recall", "F1")):
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence threshold (keep score >=)", ylabel=key,
               title=f"{key} at IoU 0.5")
        ax.grid(True, alpha=0.3)
    axes[2].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_confusion(m: Confusion, path: Path, caption: str) -> Path:
    """The matrix as counts and normalised by row, side by side."""
    plt = pyplot()
    n = len(m.labels)
    fig, axes = plt.subplots(1, 2, figsize=(4.2 + 1.1 * n * 2, 1.8 + 0.9 * n))
    for ax, data, title, fmt in ((axes[0], m.matrix, "counts", "{:d}"), (axes[1], m.normalised,
                                                                         "normalised by row", "{:.2f}")):
        ax.imshow(data, cmap="Blues", vmin=0)
        peak = float(np.max(data)) if data.size else 0.0
        for (i, j), value in np.ndenumerate(data):
            ax.text(j, i, fmt.format(value.item()), ha="center", va="center", fontsize=8,
                    color="white" if peak and value > 0.6 * peak else "black")
        ax.set_xticks(range(n), m.labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), m.labels, fontsize=8)
        ax.set(xlabel="prediction", ylabel="ground truth", title=f"{title} (IoU 0.5, {caption})")
        ax.title.set_fontsize(9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
