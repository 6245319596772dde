"""COCO's own matching, kept per detection, for the analyses that need more than COCO's summary numbers.

pycocotools' ``COCOeval`` is run as MMDetection's ``CocoMetric`` runs it (its categories and images, maxDets
100/300/1000, AP read at the last), so the numbers here are the ones ``fltool eval`` prints. Its ``evalImgs`` say,
for every detection and IoU threshold, which ground truth it matched and whether it is ignored (matched to a crowd
region); :func:`class_records` collects them per class in the order ``COCOeval.accumulate`` sorts them, and
:func:`coco_average_precision` is accumulate's 101-point AP of such a list, so that a list changed on purpose (an
error fixed, a threshold applied) is scored exactly as COCO would score it.
"""
from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

#: MMDetection's CocoMetric evaluates with maxDets (100, 300, 1000) and reads AP at the last.
MAX_DETS = (100, 300, 1000)
#: COCO's IoU thresholds are 0.50:0.05:0.95: the index of each.
IOU_INDEX = {round(0.5 + 0.05 * i, 2): i for i in range(10)}
AREAS = ("all", "small", "medium", "large")
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCO's recThrs


@dataclass
class ClassRecords:
    """One class's detections at one IoU threshold, as COCO accumulates them: ignored detections (matched to a crowd
    region) left out, the rest sorted by descending score (stable, in COCO's image order)."""

    cat_id: int
    n_gt: int  # ground truth that counts (not crowd)
    scores: np.ndarray  # (D,) descending
    tp: np.ndarray  # (D,) bool: matched a ground-truth box of the class at this IoU
    det_index: np.ndarray  # (D,) index into the detections list given to :func:`run_cocoeval`
    image_ids: np.ndarray  # (D,)
    matched_gt: np.ndarray  # (D,) annotation id of the matched box, 0 for a false positive


def _quiet() -> Any:
    """pycocotools prints its progress; fltool prints results only."""
    return contextlib.redirect_stdout(io.StringIO())


def coco_api(gt: dict) -> Any:
    """A pycocotools COCO over ``gt`` (a COCO dict; a box without ``area`` gets w * h, as COCO's own do)."""
    from pycocotools.coco import COCO

    data = copy.deepcopy(gt)
    for ann in data.get("annotations", []):
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    api = COCO()
    api.dataset = data
    with _quiet():
        api.createIndex()
    return api


def _results_api(gt_api: Any, detections: Sequence[dict]) -> Any:
    """COCO's ``loadRes`` of the detections (ids 1..N in list order); an empty list gives an empty result set."""
    from pycocotools.coco import COCO

    if detections:
        with _quiet():
            return gt_api.loadRes([dict(d) for d in detections])
    api = COCO()
    api.dataset = {"images": list(gt_api.dataset.get("images", [])),
                   "categories": copy.deepcopy(gt_api.dataset.get("categories", [])), "annotations": []}
    with _quiet():
        api.createIndex()
    return api


def run_cocoeval(gt: dict, detections: Sequence[dict], cat_ids: Sequence[int],
                 img_ids: Optional[Sequence[int]] = None) -> Any:
    """``COCOeval`` evaluated and accumulated (not summarised) for these categories and images (default: all)."""
    from pycocotools.cocoeval import COCOeval

    gt_api = coco_api(gt)
    evaluator = COCOeval(gt_api, _results_api(gt_api, detections), "bbox")
    evaluator.params.catIds = list(cat_ids)
    evaluator.params.imgIds = list(img_ids) if img_ids is not None else sorted(gt_api.getImgIds())
    evaluator.params.maxDets = list(MAX_DETS)
    with _quiet():
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def class_records(evaluator: Any, iou: float = 0.5) -> dict:
    """``{cat_id: ClassRecords}`` at IoU ``iou`` (one of COCO's 0.50:0.05:0.95), area 'all', the last maxDets."""
    t = IOU_INDEX[iou]
    params = evaluator.params
    n_img, n_area, max_det = len(params.imgIds), len(params.areaRng), params.maxDets[-1]
    out = {}
    for k, cat_id in enumerate(params.catIds):
        found = [e for e in evaluator.evalImgs[k * n_area * n_img:(k * n_area + 1) * n_img] if e is not None]
        if not found:  # neither ground truth nor detections of this class
            none = np.zeros(0, dtype=np.int64)
            out[cat_id] = ClassRecords(cat_id, 0, np.zeros(0), np.zeros(0, dtype=bool), none, none, none)
            continue
        scores = np.concatenate([e["dtScores"][:max_det] for e in found]).astype(np.float64)
        order = np.argsort(-scores, kind="mergesort")  # COCOeval.accumulate's sort
        matches = np.concatenate([e["dtMatches"][t, :max_det] for e in found])[order]
        ignored = np.concatenate([e["dtIgnore"][t, :max_det] for e in found])[order].astype(bool)
        ids = np.concatenate([np.asarray(e["dtIds"][:max_det], dtype=np.int64) for e in found])[order]
        images = np.concatenate([np.full(len(e["dtIds"][:max_det]), e["image_id"], dtype=np.int64)
                                 for e in found])[order]
        n_gt = int(sum(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0) for e in found))
        keep = ~ignored
        out[cat_id] = ClassRecords(cat_id, n_gt, scores[order][keep], matches[keep] > 0, ids[keep] - 1,
                                   images[keep], matches[keep].astype(np.int64))
    return out


def coco_average_precision(tp: np.ndarray, n_gt: int) -> Optional[float]:
    """COCO's 101-point interpolated AP of detections in score order (``tp``: matched or not), None without ground
    truth. The same arithmetic as ``COCOeval.accumulate`` (cumulative sums, the precision envelope, ``searchsorted``
    on the recall thresholds), so a list taken from :func:`class_records` gives COCO's number to the last bit."""
    if n_gt <= 0:
        return None
    tp = np.asarray(tp, dtype=bool)
    if tp.size == 0:
        return 0.0
    tps = np.cumsum(tp).astype(float)
    fps = np.cumsum(~tp).astype(float)
    recall = tps / n_gt
    precision = np.maximum.accumulate((tps / (fps + tps + np.spacing(1)))[::-1])[::-1]
    inds = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    sampled = np.where(inds < len(precision), precision[np.minimum(inds, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def coco_mean(values: np.ndarray) -> Optional[float]:
    """The mean of ``eval['precision']`` entries as pycocotools' summarize takes it (entries > -1), None where none."""
    values = values[values > -1]
    return float(values.mean()) if values.size else None


def per_class_metrics(evaluator: Any, k: int) -> dict:
    """AP, AP50, AP75, APs, APm, APl of the k-th category of ``evaluator.params.catIds`` from ``eval['precision']``
    (T, R, K, A, M); None where COCO has no ground truth for it (-1)."""
    precision = evaluator.eval["precision"]

    return {"AP": coco_mean(precision[:, :, k, 0, -1]), "AP50": coco_mean(precision[IOU_INDEX[0.5], :, k, 0, -1]),
            "AP75": coco_mean(precision[IOU_INDEX[0.75], :, k, 0, -1]), "APs": coco_mean(precision[:, :, k, 1, -1]),
            "APm": coco_mean(precision[:, :, k, 2, -1]), "APl": coco_mean(precision[:, :, k, 3, -1])}


def overall_metrics(evaluator: Any) -> dict:
    """The same six over all categories, as pycocotools' summarize averages them (entries > -1)."""
    precision = evaluator.eval["precision"]

    return {"AP": coco_mean(precision[:, :, :, 0, -1]), "AP50": coco_mean(precision[IOU_INDEX[0.5], :, :, 0, -1]),
            "AP75": coco_mean(precision[IOU_INDEX[0.75], :, :, 0, -1]), "APs": coco_mean(precision[:, :, :, 1, -1]),
            "APm": coco_mean(precision[:, :, :, 2, -1]), "APl": coco_mean(precision[:, :, :, 3, -1])}


def ap_per_iou(evaluator: Any) -> dict:
    """COCO's AP at each of its IoU thresholds ("0.50" ... "0.95"; area all, the last maxDets), from an accumulated
    COCOeval: where a loss's lead over another lies (their mean over the ten thresholds is COCO's AP). None where no
    class has ground truth."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # IoU x recall x class
    return {f"{iou:.2f}": coco_mean(precision[t]) for t, iou in enumerate(evaluator.params.iouThrs)}


def box_iou(boxes_a: Sequence, boxes_b: Sequence, crowd_b: Optional[Sequence[bool]] = None) -> np.ndarray:
    """(len(a), len(b)) IoU of COCO boxes (x, y, w, h), with pycocotools' own function (a crowd box in ``b``
    counts the overlap over the area of ``a``, as COCO does)."""
    from pycocotools import mask as mask_utils

    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return np.zeros((len(boxes_a), len(boxes_b)))
    crowd = [int(bool(c)) for c in (crowd_b if crowd_b is not None else [0] * len(boxes_b))]
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    return np.asarray(mask_utils.iou(a, b, crowd), dtype=np.float64).reshape(len(a), len(b))
