"""Why a detector misses: TIDE's error breakdown (Bolya, Foley, Hays, Hoffman, "TIDE: A General Toolbox for
Identifying Object Detection Errors", ECCV 2020), on top of COCO's own matching.

Every false positive at IoU 0.5 gets one error type, tested in TIDE's order (foreground IoU t_f = 0.5, background
IoU t_b = 0.1; IoU of the detection with the ground-truth boxes of the image). ``fg_iou`` sets t_f to another of
COCO's thresholds (TIDE's ``pos_threshold``): at 0.75 the breakdown is of AP75, and a box found at IoU 0.5-0.75 is a
Loc error there, which is where a loss that gives tighter boxes shows its gain.

- **Loc** (localisation): its best IoU with a box of its own class is in [t_b, t_f];
- **Cls** (classification): IoU >= t_f with a box of another class;
- **Dupe** (duplicate): IoU >= t_f with a box of its class that a higher-scoring detection already matched;
- **Bkg** (background): IoU <= t_b with every box;
- **Both**: anything else (a box of another class at IoU in [t_b, t_f)), TIDE's catch-all;
- **Miss**: a ground-truth box that nothing matched and no Cls or Loc error points at.

Each type's weight is the AP it costs: dAP = AP50 with the oracle applied to that type's errors, minus AP50. The
oracles are TIDE's: a Cls/Loc error becomes a true positive of the box's class (only the highest-scoring one per
box; the others are suppressed), Dupe, Bkg and Both detections are suppressed, and a Miss is taken out of the
class's ground-truth count. The two special ones: **FalsePos** removes every false positive (perfect precision at
the same recall), **FalseNeg** takes every unmatched box out of the count (perfect recall at the same precision).
Fixing all six types at once leaves only true positives and no unmatched box: AP50 becomes 1, which is the check
that the breakdown accounts for all of the AP lost.

Where this follows COCO rather than tidecv: true and false positives and crowd-ignored detections are COCOeval's
(IoU 0.5, area 'all', maxDets as MMDetection's CocoMetric), and AP50 averages the classes with ground truth, so the
AP here is ``fltool eval``'s AP50 exactly; tidecv matches on its own and also averages classes that only have
detections. As tidecv does, a dAP below 0 (none can occur here but through rounding) is reported as 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from fltool.analysis.matching import IOU_INDEX, ap_per_iou, box_iou, class_records, coco_average_precision, run_cocoeval
from fltool.errors import ConfigError

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")  # TIDE's order
SPECIAL_TYPES = ("FalsePos", "FalseNeg")
ERROR_NAMES = {"Cls": "classification", "Loc": "localisation", "Both": "classification + localisation",
               "Dupe": "duplicate", "Bkg": "background", "Miss": "missed", "FalsePos": "all false positives",
               "FalseNeg": "all false negatives"}
FG_IOU, BG_IOU = 0.5, 0.1


@dataclass
class FoundError:
    """One error: a false positive (``det`` >= 0) or a missed box (``det`` = -1)."""

    kind: str
    cat_id: int  # the detection's class; a Miss: the box's class
    image_id: int
    det: int = -1  # index into the detections
    gt: int = 0  # annotation id of the box it concerns (0: none)
    gt_cat: int = 0
    score: float = float("nan")
    iou: float = 0.0  # IoU with that box (a Bkg/Both error: its best IoU with any box)
    fixes: bool = False  # a Cls/Loc error its oracle turns into a true positive (else the oracle suppresses it)


@dataclass
class ErrorBreakdown:
    """TIDE's numbers, overall and per class (by category id)."""

    cat_ids: list
    classes: list
    ap: Optional[float]  # AP50 over the classes with ground truth (COCO's)
    dap: dict  # type -> dAP (ERROR_TYPES and SPECIAL_TYPES)
    ap_all_fixed: Optional[float]  # AP50 with all six types fixed at once (1.0)
    counts: dict  # type -> number of errors
    per_class: dict  # cat_id -> {"AP50", "n_gt", "dAP": {type: v}, "counts": {type: n}}
    errors: list = field(default_factory=list)  # FoundError
    fg_iou: float = FG_IOU  # the foreground IoU t_f: AP50 at 0.5, AP75 at 0.75
    ap_per_iou: dict = field(default_factory=dict)  # "0.50".."0.95" -> COCO's AP at that IoU (their mean is AP)

    @property
    def ap_name(self) -> str:
        """The AP broken down: ``AP50`` at the default foreground IoU, ``AP75`` at 0.75 (the per-class rows' key)."""
        return ap_name(self.fg_iou)

    def as_dict(self) -> dict:
        names = dict(zip(self.cat_ids, self.classes))
        return {"iou_foreground": self.fg_iou, "iou_background": BG_IOU, "AP_name": self.ap_name,
                self.ap_name: self.ap, "dAP": dict(self.dap), f"{self.ap_name}_all_fixed": self.ap_all_fixed,
                "counts": dict(self.counts), "per_class": {names[c]: row for c, row in self.per_class.items()},
                "types": dict(ERROR_NAMES), "AP_per_IoU": dict(self.ap_per_iou)}


def ap_name(fg_iou: float) -> str:
    """``AP50``, ``AP75``, ...: the COCO AP at the foreground IoU ``fg_iou``."""
    return f"AP{round(fg_iou * 100)}"


def check_fg_iou(fg_iou: float) -> float:
    """``fg_iou`` as one of COCO's IoU thresholds (0.50:0.05:0.95), the ones its evaluation matched at."""
    value = round(float(fg_iou), 2)
    if value not in IOU_INDEX or abs(value - fg_iou) > 1e-9:
        raise ConfigError(f"--iou {fg_iou}: not one of COCO's IoU thresholds", "use 0.5, 0.55, ..., 0.95")
    return value


def classify_false_positive(det_cat: int, ious: np.ndarray, gt_cats: np.ndarray, gt_used: np.ndarray,
                            fg: float = FG_IOU, bg: float = BG_IOU) -> tuple[str, int]:
    """TIDE's error type of one false positive and the index of the box it concerns (-1: none), from its IoU with
    each ground-truth box of the image (``gt_used``: matched by a true positive). TIDE tests in this order."""
    if len(ious) == 0:
        return "Bkg", -1
    same = gt_cats == det_cat
    own = np.where(same, ious, 0.0)
    i = int(np.argmax(own))
    if bg <= own[i] <= fg:
        return "Loc", i
    other = np.where(same, 0.0, ious)
    j = int(np.argmax(other))
    if other[j] >= fg:
        return "Cls", j
    taken = np.where(same & gt_used, ious, 0.0)
    u = int(np.argmax(taken))
    if taken[u] >= fg:
        return "Dupe", u
    if ious.max() <= bg:
        return "Bkg", -1
    return "Both", -1


def _image_boxes(gt: dict, cat_ids: Sequence[int]) -> dict:
    """image id -> (annotation ids, category ids, boxes) of the boxes that count: the model's classes, no crowd."""
    wanted = set(cat_ids)
    out: dict = {}
    for ann in gt.get("annotations", []):
        if ann.get("category_id") in wanted and not ann.get("iscrowd", 0) and not ann.get("ignore", 0):
            ids, cats, boxes = out.setdefault(ann["image_id"], ([], [], []))
            ids.append(ann["id"])
            cats.append(ann["category_id"])
            boxes.append(ann["bbox"])
    return out


def find_errors(records: dict, detections: Sequence[dict], gt: dict, cat_ids: Sequence[int],
                fg: float = FG_IOU) -> list:
    """Every false positive's error type and every missed box (see the module docstring), image by image, false
    positives in descending score (TIDE's order, which decides which Cls/Loc error fixes a box)."""
    boxes = _image_boxes(gt, cat_ids)
    used = {int(g) for rec in records.values() for g in rec.matched_gt[rec.tp]}
    false_pos: dict = {}
    for cat_id, rec in records.items():
        for det, score, image_id in zip(rec.det_index[~rec.tp], rec.scores[~rec.tp], rec.image_ids[~rec.tp]):
            false_pos.setdefault(int(image_id), []).append((-float(score), int(det), cat_id))
    errors: list = []
    best: dict = {}  # box id -> the Cls/Loc error that fixes it: the first of the highest score
    for image_id in sorted(set(false_pos) | set(boxes)):
        ids, cats, gt_boxes = boxes.get(image_id, ([], [], []))
        ids_arr, cats_arr = np.asarray(ids, dtype=np.int64), np.asarray(cats, dtype=np.int64)
        used_arr = np.array([i in used for i in ids], dtype=bool)
        for neg_score, det, cat_id in sorted(false_pos.get(image_id, []), key=lambda x: x[0]):
            ious = box_iou([detections[det]["bbox"]], gt_boxes)[0] if ids else np.zeros(0)
            kind, i = classify_false_positive(cat_id, ious, cats_arr, used_arr, fg=fg)
            error = FoundError(kind, cat_id, image_id, det, int(ids_arr[i]) if i >= 0 else 0,
                               int(cats_arr[i]) if i >= 0 else 0, -neg_score,
                               float(ious[i]) if i >= 0 else float(ious.max(initial=0.0)))
            if kind in ("Cls", "Loc") and error.gt not in used and error.gt not in best:
                best[error.gt] = error  # sorted by score: the first one seen has the highest
            errors.append(error)
        for box_id, cat in zip(ids, cats):
            if box_id not in used and box_id not in best:
                errors.append(FoundError("Miss", cat, image_id, gt=box_id, gt_cat=cat))
    for error in best.values():
        error.fixes = True
    return errors


def fixed_class_aps(records: dict, errors: Sequence[FoundError], fix: Sequence[str] = (),
                    special: Optional[str] = None) -> dict:
    """cat_id -> AP50 with the oracle of each type in ``fix`` applied (or of one special type), None for a class
    left with neither ground truth nor detections (TIDE leaves such a class out of the mean)."""
    fix = set(fix)
    keep = {c: np.ones(len(r.tp), dtype=bool) for c, r in records.items()}
    tp = {c: r.tp.copy() for c, r in records.items()}
    moved: dict = {c: [] for c in records}  # Cls errors fixed into the box's class: their scores
    n_gt = {c: r.n_gt for c, r in records.items()}
    where = {int(d): (c, i) for c, r in records.items() for i, d in enumerate(r.det_index)}
    for error in errors:
        if error.kind == "Miss":
            n_gt[error.cat_id] -= int("Miss" in fix)
            continue
        if error.kind not in fix:
            continue
        cat, i = where[error.det]
        if error.kind == "Loc" and error.fixes:
            tp[cat][i] = True
        else:
            keep[cat][i] = False
            if error.kind == "Cls" and error.fixes:
                moved[error.gt_cat].append(error.score)
    out = {}
    for cat, rec in records.items():
        if special == "FalsePos":
            keep[cat] &= tp[cat]
        if special == "FalseNeg":
            n_gt[cat] = int(np.count_nonzero(rec.tp))
        scores = np.concatenate([rec.scores[keep[cat]], np.asarray(moved[cat], dtype=np.float64)])
        hits = np.concatenate([tp[cat][keep[cat]], np.ones(len(moved[cat]), dtype=bool)])
        hits = hits[np.argsort(-scores, kind="mergesort")]
        if n_gt[cat] > 0:
            out[cat] = coco_average_precision(hits, n_gt[cat])
        else:
            out[cat] = 0.0 if len(hits) else None
    return out


def _mean(aps: dict, counted: Sequence[int]) -> Optional[float]:
    values = [aps[c] for c in counted if aps.get(c) is not None]
    return float(np.mean(values)) if values else None


def error_breakdown(gt: dict, detections: Sequence[dict], cat_ids: Sequence[int], classes: Sequence[str],
                    img_ids: Optional[Sequence[int]] = None, evaluator: Any = None,
                    fg_iou: float = FG_IOU) -> ErrorBreakdown:
    """TIDE's breakdown of ``detections`` (COCO results) against ``gt`` (a COCO dict), for the categories
    ``cat_ids`` (named ``classes``), of the AP at foreground IoU ``fg_iou`` (AP50 by default). ``evaluator``: a
    COCOeval already run on them (else it is run here)."""
    fg_iou = check_fg_iou(fg_iou)
    evaluator = evaluator or run_cocoeval(gt, detections, cat_ids, img_ids)
    records: dict = class_records(evaluator, fg_iou)
    errors = find_errors(records, detections, gt, cat_ids, fg=fg_iou)
    counted = [c for c in cat_ids if records[c].n_gt > 0]  # COCO averages the classes with ground truth
    base = fixed_class_aps(records, errors)
    ap = _mean(base, counted)
    dap, per_class_dap = {}, {c: {} for c in cat_ids}
    for kind in ERROR_TYPES + SPECIAL_TYPES:
        fixed = fixed_class_aps(records, errors, fix=(kind,) if kind in ERROR_TYPES else (),
                                special=kind if kind in SPECIAL_TYPES else None)
        dap[kind] = _gain(_mean(fixed, counted), ap)
        for c in counted:
            per_class_dap[c][kind] = _gain(fixed[c], base[c])
    ap_all = _mean(fixed_class_aps(records, errors, fix=ERROR_TYPES), counted)
    counts = {kind: sum(1 for e in errors if e.kind == kind) for kind in ERROR_TYPES}
    per_class = {c: {ap_name(fg_iou): base.get(c) if c in counted else None, "n_gt": records[c].n_gt,
                     "detections": len(records[c].tp), "true_positives": int(np.count_nonzero(records[c].tp)),
                     "dAP": per_class_dap[c],
                     "counts": {kind: sum(1 for e in errors if e.kind == kind and e.cat_id == c)
                                for kind in ERROR_TYPES}}
                 for c in cat_ids}
    return ErrorBreakdown(list(cat_ids), list(classes), ap, dap, ap_all, counts, per_class, errors, fg_iou,
                          ap_per_iou(evaluator))



def _gain(fixed: Optional[float], base: Optional[float]) -> Optional[float]:
    """dAP, negatives (rounding) as 0, as tidecv reports them."""
    if fixed is None or base is None:
        return None
    return max(fixed - base, 0.0)

