"""The detection confusion matrix and the images a detector gets most wrong, at the chosen score thresholds.

Rows are the ground truth (each class, then background), columns the prediction (each class, then background).
Per image, the detections kept (score >= their class's threshold) are matched at IoU >= 0.5 in two passes, each
in descending score and each taking the unmatched box of highest IoU:

1. to a box of their own class (COCO's rule, so the diagonal is COCO's true-positive count at these thresholds);
2. what is left, to a box of another class: a class confusion (row: the box's class, column: the detection's);

then a detection still unmatched is a false positive on background (background row) unless it covers a crowd region
(COCO ignores those; so does the matrix), and a box still unmatched is missed (background column). The normalised
matrix divides each row by its sum: where each class's boxes went, and which classes the background was taken for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from fltool.analysis.matching import box_iou

MATCH_IOU = 0.5


@dataclass
class ImageOutcome:
    """What happened in one image: each kept detection and each box, by index into the lists given."""

    image_id: int
    det_status: list  # per kept detection: "tp" | "confused" | "background" | "ignored"
    det_match: list  # the box index it matched (-1: none)
    gt_status: list  # per box: "tp" | "confused" | "missed" | "ignored" (a crowd region)
    kept: list = field(default_factory=list)  # indices of the detections kept (into the image's detections)

    @property
    def false_positives(self) -> int:
        return sum(s in ("confused", "background") for s in self.det_status)

    @property
    def misses(self) -> int:
        return sum(s in ("confused", "missed") for s in self.gt_status)


def _greedy(order: Sequence[int], ious: np.ndarray, allowed: np.ndarray, gt_taken: np.ndarray,
            det_match: list) -> None:
    """Match each detection in ``order`` (not yet matched) to the free box of highest IoU >= 0.5 it may take."""
    for d in order:
        if det_match[d] >= 0:
            continue
        candidates = np.where(allowed[d] & ~gt_taken & (ious[d] >= MATCH_IOU), ious[d], -1.0)
        if candidates.size and candidates.max() >= MATCH_IOU:
            g = int(np.argmax(candidates))
            det_match[d] = g
            gt_taken[g] = True


def match_image(image_id: int, gt_boxes: Sequence, gt_labels: Sequence[int], gt_crowd: Sequence[bool],
                det_boxes: Sequence, det_labels: Sequence[int], det_scores: Sequence[float],
                thresholds: np.ndarray) -> ImageOutcome:
    """One image's outcome (boxes x, y, w, h; labels index ``thresholds``) by the two passes of the module
    docstring."""
    gt_labels, crowd = np.asarray(gt_labels, dtype=np.int64), np.asarray(gt_crowd, dtype=bool)
    det_labels, det_scores = np.asarray(det_labels, dtype=np.int64), np.asarray(det_scores, dtype=float)
    kept = [int(i) for i in np.argsort(-det_scores, kind="mergesort")
            if det_scores[i] >= thresholds[det_labels[i]]]
    boxes = [det_boxes[i] for i in kept]
    labels = det_labels[kept] if kept else np.zeros(0, dtype=np.int64)
    real = np.flatnonzero(~crowd)
    ious = box_iou(boxes, [gt_boxes[g] for g in real])  # (kept, real boxes)
    taken = np.zeros(len(real), dtype=bool)
    match = [-1] * len(kept)
    same = labels[:, None] == gt_labels[real][None, :]
    _greedy(range(len(kept)), ious, same, taken, match)
    _greedy(range(len(kept)), ious, ~same, taken, match)
    crowd_iou = box_iou(boxes, [gt_boxes[g] for g in np.flatnonzero(crowd)], [True] * int(crowd.sum()))
    det_status = []
    for d, g in enumerate(match):
        if g >= 0:
            det_status.append("tp" if same[d, g] else "confused")
        elif crowd_iou.shape[1] and crowd_iou[d].max() >= MATCH_IOU:
            det_status.append("ignored")
        else:
            det_status.append("background")
    gt_status = ["missed"] * len(gt_labels)
    for d, g in enumerate(match):
        if g >= 0:
            gt_status[int(real[g])] = "tp" if same[d, g] else "confused"
    for g in np.flatnonzero(crowd):
        gt_status[int(g)] = "ignored"  # a crowd region: COCO neither needs nor misses it
    return ImageOutcome(image_id, det_status, [int(real[g]) if g >= 0 else -1 for g in match], gt_status, kept)


def accumulate(matrix: np.ndarray, outcome: ImageOutcome, gt_labels: Sequence[int], det_labels: Sequence[int],
               gt_crowd: Sequence[bool]) -> None:
    """Add one image's outcome to a (K+1, K+1) matrix (index K: background)."""
    k = matrix.shape[0] - 1
    for d, status, g in zip(outcome.kept, outcome.det_status, outcome.det_match):
        if status in ("tp", "confused"):
            matrix[gt_labels[g], det_labels[d]] += 1
        elif status == "background":
            matrix[k, det_labels[d]] += 1
    for g, status in enumerate(outcome.gt_status):
        if status == "missed" and not gt_crowd[g]:
            matrix[gt_labels[g], k] += 1


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row over its sum (a row without entries stays 0)."""
    sums = matrix.sum(axis=1, keepdims=True).astype(float)
    return np.divide(matrix, sums, out=np.zeros(matrix.shape, dtype=float), where=sums > 0)


@dataclass
class Confusion:
    matrix: np.ndarray  # (K+1, K+1) counts: rows ground truth, columns prediction, index K background
    outcomes: list  # ImageOutcome per image
    labels: list  # class names, then "background"

    @property
    def normalised(self) -> np.ndarray:
        return normalise_rows(self.matrix)

    def worst(self, n: int) -> list:
        """The ``n`` images with the most false positives + misses (ties: the first in the data), none without."""
        ranked = sorted(self.outcomes, key=lambda o: -(o.false_positives + o.misses))
        return [o for o in ranked if o.false_positives + o.misses > 0][:n]


def image_tables(gt: dict, detections: Sequence[dict], cat_ids: Sequence[int]) -> dict:
    """image id -> {"gt": [(box, label, crowd)], "det": [(box, label, score)]} with labels as indices of
    ``cat_ids`` (boxes and detections of other categories left out)."""
    label = {c: i for i, c in enumerate(cat_ids)}
    out = {img["id"]: {"gt": [], "det": []} for img in gt.get("images", [])}
    for ann in gt.get("annotations", []):
        if ann.get("category_id") in label and ann.get("image_id") in out:
            crowd = bool(ann.get("iscrowd", 0) or ann.get("ignore", 0))
            out[ann["image_id"]]["gt"].append((ann["bbox"], label[ann["category_id"]], crowd))
    for det in detections:
        if det.get("category_id") in label and det.get("image_id") in out:
            out[det["image_id"]]["det"].append((det["bbox"], label[det["category_id"]], float(det["score"])))
    return out


def confusion(gt: dict, detections: Sequence[dict], cat_ids: Sequence[int], classes: Sequence[str],
              thresholds: Sequence[float], tables: Optional[dict] = None) -> Confusion:
    """The matrix and per-image outcomes of ``detections`` against ``gt`` at per-class ``thresholds``."""
    tables = tables if tables is not None else image_tables(gt, detections, cat_ids)
    thr = np.asarray(thresholds, dtype=float)
    matrix = np.zeros((len(cat_ids) + 1, len(cat_ids) + 1), dtype=np.int64)
    outcomes = []
    for image_id, table in tables.items():
        gt_boxes, gt_labels, gt_crowd = zip(*table["gt"]) if table["gt"] else ((), (), ())
        det_boxes, det_labels, det_scores = zip(*table["det"]) if table["det"] else ((), (), ())
        outcome = match_image(image_id, gt_boxes, gt_labels, gt_crowd, det_boxes, det_labels, det_scores, thr)
        accumulate(matrix, outcome, gt_labels, det_labels, gt_crowd)
        outcomes.append(outcome)
    return Confusion(matrix, outcomes, [*classes, "background"])
