"""What threshold to ship: per-class metrics, precision-recall curves, precision/recall/F1 against the confidence and
the F1-optimal confidence, from COCO's own matching (:mod:`fltool.analysis.matching`).

- A **PR curve** is COCO's: detections of a class in descending score, each a true positive when COCOeval matched
  it at that IoU (0.5 or 0.75); precision and recall after each one. Its *area* here is the exact area under the
  precision envelope (all-point interpolation); COCO's AP samples the same envelope at 101 recall points, so the two
  agree to within about a hundredth of a recall step.
- **Precision, recall and F1 against the confidence** ``t`` count the detections with score >= t (what
  ``fltool predict --score-thr t`` keeps). F1 = 2 TP / (detections + ground truth). The **F1-optimal confidence** is
  the highest ``t`` reaching the best F1; overall, all classes pooled at one ``t``. COCO's greedy matching goes in
  score order, so the matches of the detections above ``t`` are exactly the ones they get with all detections.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from fltool.analysis.matching import class_records, overall_metrics, per_class_metrics, run_cocoeval

#: The threshold used where none can be chosen (no detection ever matches): fltool predict's default.
FALLBACK_THR = 0.3


@dataclass
class Operating:
    """Precision, recall and F1 when keeping detections scored at least ``threshold``."""

    threshold: float
    precision: float
    recall: float
    f1: float
    true_positives: int
    detections: int

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "true_positives": self.true_positives, "detections": self.detections}


def pr_points(tp: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) after each detection of a score-ordered list (COCO's points, COCO's epsilon)."""
    tps = np.cumsum(np.asarray(tp, dtype=bool)).astype(float)
    fps = np.arange(1, len(tps) + 1) - tps
    return tps / (tps + fps + np.spacing(1)), tps / max(n_gt, 1)


def precision_envelope(precision: np.ndarray) -> np.ndarray:
    """The best precision at this recall or beyond: the curve COCO integrates."""
    return np.maximum.accumulate(np.asarray(precision, dtype=float)[::-1])[::-1]


def curve_area(tp: np.ndarray, n_gt: int) -> Optional[float]:
    """The exact area under the precision envelope of a score-ordered list (all-point interpolated AP)."""
    if n_gt <= 0:
        return None
    precision, recall = pr_points(tp, n_gt)
    if len(recall) == 0:
        return 0.0
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * precision_envelope(precision)))


def threshold_curve(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> dict:
    """Precision, recall and F1 at every distinct score ``t`` (keeping score >= t), ``t`` descending."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="mergesort")
    s, hits = scores[order], np.asarray(tp, dtype=bool)[order]
    tps = np.cumsum(hits)
    kept = np.arange(1, len(s) + 1)
    last = np.concatenate([s[1:] != s[:-1], [True]]) if len(s) else np.zeros(0, dtype=bool)  # end of a tie
    s, tps, kept = s[last], tps[last], kept[last]
    precision = tps / np.maximum(kept, 1)
    recall = tps / n_gt if n_gt > 0 else np.zeros(len(s))
    f1 = 2 * tps / (kept + n_gt) if len(s) else np.zeros(0)
    return {"threshold": s, "precision": precision, "recall": recall, "f1": f1, "true_positives": tps,
            "detections": kept}


def f1_optimal(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> Optional[Operating]:
    """The highest threshold with the best F1, or None where no detection is ever a true positive."""
    curve = threshold_curve(scores, tp, n_gt)
    if n_gt <= 0 or not len(curve["f1"]) or curve["f1"].max() <= 0:
        return None
    i = int(np.argmax(curve["f1"]))  # the first maximum: thresholds descend
    return Operating(float(curve["threshold"][i]), float(curve["precision"][i]), float(curve["recall"][i]),
                     float(curve["f1"][i]), int(curve["true_positives"][i]), int(curve["detections"][i]))


def operating_at(scores: np.ndarray, tp: np.ndarray, n_gt: int, threshold: float) -> Operating:
    """Precision, recall and F1 keeping score >= ``threshold`` (precision 0 where nothing is kept)."""
    keep = np.asarray(scores, dtype=float) >= threshold
    hits = int(np.count_nonzero(np.asarray(tp, dtype=bool)[keep]))
    kept = int(np.count_nonzero(keep))
    total = kept + n_gt
    return Operating(float(threshold), hits / kept if kept else 0.0, hits / n_gt if n_gt > 0 else 0.0,
                     2 * hits / total if total else 0.0, hits, kept)


@dataclass
class ClassCurve:
    """One class's score-ordered detections at IoU 0.5 and 0.75, as COCO matched them."""

    cat_id: int
    name: str
    n_gt: int
    scores: np.ndarray
    tp50: np.ndarray
    scores75: np.ndarray
    tp75: np.ndarray


@dataclass
class PrAnalysis:
    """Everything ``fltool analyze pr`` reports, before drawing."""

    classes: list  # ClassCurve per class, in label order
    metrics: dict  # overall AP, AP50, ... (COCO)
    per_class_metrics: dict  # name -> AP, AP50, ... (COCO)
    chosen: dict  # name -> Operating at the class's F1-optimal threshold (classes where one exists)
    overall: Optional[Operating]  # pooled, at the overall F1-optimal threshold
    thresholds: dict  # name -> the threshold applied to that class (its own, else the overall/fixed one)
    at_thresholds: dict  # name -> Operating at the applied threshold; "all" -> pooled at the per-class ones
    fixed_thr: Optional[float] = None  # --score-thr: one threshold for every class instead of the chosen ones
    notes: list = field(default_factory=list)

    def pooled(self) -> tuple[np.ndarray, np.ndarray, int]:
        """All classes' (scores, tp at 0.5, ground truth) together: the overall curve."""
        scores = np.concatenate([c.scores for c in self.classes]) if self.classes else np.zeros(0)
        tp = np.concatenate([c.tp50 for c in self.classes]) if self.classes else np.zeros(0, dtype=bool)
        return scores, tp, sum(c.n_gt for c in self.classes)


def class_curves(evaluator: Any, names: dict) -> list:
    """A :class:`ClassCurve` per category of the evaluator, named by ``names`` (cat id -> name)."""
    at50, at75 = class_records(evaluator, 0.5), class_records(evaluator, 0.75)
    return [ClassCurve(c, names[c], at50[c].n_gt, at50[c].scores, at50[c].tp, at75[c].scores, at75[c].tp)
            for c in names]


def pr_analysis(gt: dict, detections: Sequence[dict], cat_ids: Sequence[int], classes: Sequence[str],
                score_thr: Optional[float] = None, evaluator: Any = None) -> PrAnalysis:
    """Per-class metrics, curves and thresholds of ``detections`` against ``gt`` (COCO dict and results)."""
    evaluator = evaluator or run_cocoeval(gt, detections, cat_ids)
    names = dict(zip(cat_ids, classes))
    curves = class_curves(evaluator, names)
    index = {c: k for k, c in enumerate(evaluator.params.catIds)}
    per_class = {names[c]: per_class_metrics(evaluator, index[c]) for c in cat_ids}
    chosen = {c.name: op for c in curves if (op := f1_optimal(c.scores, c.tp50, c.n_gt)) is not None}
    analysis = PrAnalysis(curves, overall_metrics(evaluator), per_class, chosen, None, {}, {}, score_thr)
    scores, tp, n_gt = analysis.pooled()
    analysis.overall = f1_optimal(scores, tp, n_gt)
    default = score_thr if score_thr is not None else (analysis.overall.threshold if analysis.overall else None)
    if default is None:
        default = FALLBACK_THR
        analysis.notes.append(f"no detection matches any ground truth: no threshold to choose; {FALLBACK_THR} used")
    for c in curves:
        own = chosen.get(c.name) if score_thr is None else None
        analysis.thresholds[c.name] = own.threshold if own is not None else default
        analysis.at_thresholds[c.name] = operating_at(c.scores, c.tp50, c.n_gt, analysis.thresholds[c.name])
    ops = analysis.at_thresholds.values()
    hits, kept = sum(o.true_positives for o in ops), sum(o.detections for o in ops)
    analysis.at_thresholds["all"] = Operating(float("nan"), hits / kept if kept else 0.0,
                                              hits / n_gt if n_gt else 0.0,
                                              2 * hits / (kept + n_gt) if kept + n_gt else 0.0, hits, kept)
    return analysis
