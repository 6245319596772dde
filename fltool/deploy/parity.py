"""Does the exported file detect what the PyTorch model detects? The check ``fltool export`` runs after writing
(the ONNX file with ONNX Runtime; the OpenVINO IR with OpenVINO, f32).

Both run the config's test set (the same batches, the same data pipeline and preprocessor); per image, every
detection of one is matched to a detection of the other with the same label, greedily by score: a pair matches when
its boxes overlap with IoU >= 0.99 and its scores differ by at most 1e-3. A detection left without a partner whose
score lies within that tolerance of where the post-processing cuts (the score threshold, or the lowest score kept
when the image has ``max_per_img`` detections) is *borderline*: rounding may move such a box across the cut, which
says nothing about the graph. Both sets also go through the config's COCO evaluator; their AP must agree within
0.005. The file passes when nothing is unmatched beyond the borderline and the APs agree.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fltool.progress import ProgressEvent, ProgressFn, no_progress

IOU_MIN = 0.99
SCORE_TOL = 1e-3
AP_TOL = 0.005


@dataclass
class ParityReport:
    num_images: int
    detections_pytorch: int
    detections_onnx: int
    matched: int
    borderline: int  # unmatched, within SCORE_TOL of the cut (see the module docstring)
    unmatched: int
    min_iou: float  # over matched pairs (1.0 when none)
    max_score_diff: float  # over matched pairs
    metrics_pytorch: dict = field(default_factory=dict)
    metrics_onnx: dict = field(default_factory=dict)
    iou_min: float = IOU_MIN
    score_tol: float = SCORE_TOL
    ap_tol: float = AP_TOL
    runtime: str = "ONNX Runtime"  # what ran the exported file (the *_onnx fields are its)

    @property
    def ap_diff(self) -> float:
        a, b = self.metrics_pytorch.get("AP"), self.metrics_onnx.get("AP")
        return abs(a - b) if a is not None and b is not None else float("nan")

    @property
    def ok(self) -> bool:
        return self.unmatched == 0 and self.ap_diff <= self.ap_tol

    def as_dict(self) -> dict:
        return dict(num_images=self.num_images, detections_pytorch=self.detections_pytorch,
                    detections_onnx=self.detections_onnx, matched=self.matched, borderline=self.borderline,
                    unmatched=self.unmatched, min_iou=self.min_iou, max_score_diff=self.max_score_diff,
                    AP_pytorch=self.metrics_pytorch.get("AP"), AP_onnx=self.metrics_onnx.get("AP"),
                    ap_diff=self.ap_diff, ok=self.ok, runtime=self.runtime,
                    criteria=dict(iou_min=self.iou_min, score_tol=self.score_tol, ap_tol=self.ap_tol))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a (N, 4)`` with every box in ``b (M, 4)`` (x1 y1 x2 y2, no +1): ``(N, M)``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_detections(ref: Any, got: Any, *, score_thr: float, max_per_img: int, iou_min: float = IOU_MIN,
                     score_tol: float = SCORE_TOL) -> dict:
    """Greedy same-label matching of two detection sets (objects with ``boxes``, ``scores``, ``labels`` arrays).

    Returns counts (matched, borderline, unmatched) and the worst IoU and score difference among the matches.
    """
    ious = box_iou(ref.boxes, got.boxes) if len(ref.scores) and len(got.scores) else np.zeros((len(ref.scores),
                                                                                               len(got.scores)))
    used = np.zeros(len(got.scores), dtype=bool)
    ref_unmatched, pair_iou, pair_diff = [], [], []
    for i in np.argsort(-ref.scores, kind="stable"):
        options = np.flatnonzero((got.labels == ref.labels[i]) & ~used)
        if options.size:
            j = options[np.argmax(ious[i, options])]
            diff = abs(float(ref.scores[i]) - float(got.scores[j]))
            if ious[i, j] >= iou_min and diff <= score_tol:
                used[j] = True
                pair_iou.append(float(ious[i, j]))
                pair_diff.append(diff)
                continue
        ref_unmatched.append(i)

    def cut(scores: np.ndarray) -> float:
        return float(scores.min()) if len(scores) >= max_per_img else score_thr

    def borderline(scores: np.ndarray, idx: Any) -> int:
        return int(sum(float(scores[k]) - cut(scores) <= score_tol for k in idx))

    got_unmatched = np.flatnonzero(~used)
    border = borderline(ref.scores, ref_unmatched) + borderline(got.scores, got_unmatched)
    return dict(matched=len(pair_iou), borderline=border, unmatched=len(ref_unmatched) + len(got_unmatched) - border,
                min_iou=min(pair_iou, default=1.0), max_score_diff=max(pair_diff, default=0.0))


def _detections(sample: Any) -> Any:
    from fltool_plugins.models import Detections

    pred = sample.pred_instances
    return Detections(pred.bboxes.detach().cpu().numpy(), pred.scores.detach().cpu().numpy(),
                      pred.labels.detach().cpu().numpy())


def onnx_detector(onnx_file: Any, data_preprocessor: Any, threads: Any = None) -> Any:
    """The ONNX file as an MMEngine model with the detector's data preprocessor (padding left to the graph)."""
    from fltool_plugins.models import OnnxRuntimeDetector

    prep = copy.deepcopy(dict(data_preprocessor or {}))
    prep["pad_size_divisor"] = 1  # the file pads to its size divisor itself (or to its fixed size)
    return OnnxRuntimeDetector(onnx_file=str(onnx_file), data_preprocessor=prep, threads=threads).eval()


def exported_detector(backend: Any, data_preprocessor: Any) -> Any:
    """A runtime (``backend(images) -> [Detections]``, e.g. an ``OpenVINOBackend``) as an MMEngine model with the
    detector's data preprocessor (padding left to the graph)."""
    from fltool_plugins.models import ExportedDetector

    prep = copy.deepcopy(dict(data_preprocessor or {}))
    prep["pad_size_divisor"] = 1
    return ExportedDetector(backend, data_preprocessor=prep).eval()


def evaluator_cfg_for(runner: Any, subset: bool) -> Any:
    """The config's test evaluator; for ``subset`` (the first images of the split: --check-images) one against an
    annotation file of only those images, like bench."""
    from fltool.engine.metrics import subset_evaluator_cfg

    if not subset:
        return runner.cfg.test_evaluator
    dataset = runner.test_dataloader.dataset
    ids = [dataset.get_data_info(i)["img_id"] for i in range(len(dataset))]
    return subset_evaluator_cfg(runner.cfg, ids, Path(runner.cfg.work_dir), {})


def val_metrics(runner: Any, detector: Any, progress: ProgressFn = no_progress, subset: bool = False,
                what: str = "evaluating") -> dict:
    """COCO metrics (pycocotools, through the config's evaluator) of ``detector`` (any MMEngine model: an exported
    file's) on the test set, as ``fltool eval`` computes them."""
    import torch

    from fltool.engine import runner as rn
    from fltool.engine.metrics import coco_metrics

    loader = runner.test_dataloader
    evaluator = runner.build_evaluator(copy.deepcopy(evaluator_cfg_for(runner, subset)))
    evaluator.dataset_meta = loader.dataset.metainfo
    with rn.translate_errors(), torch.no_grad():
        for b, batch in enumerate(loader):
            progress(ProgressEvent("stage", f"{what} on the test set", b, len(loader)))
            evaluator.process(data_samples=detector.test_step(batch), data_batch=batch)
        progress(ProgressEvent("stage", f"{what} on the test set", len(loader), len(loader)))
        return coco_metrics(evaluator.evaluate(len(loader.dataset)))


def check_parity(runner: Any, model: Any, onnx_file: Any, progress: ProgressFn = no_progress,
                 subset: bool = False, exported: Any = None, runtime: str = "ONNX Runtime") -> ParityReport:
    """Run the test set through ``model`` (PyTorch) and ``onnx_file`` (ONNX Runtime; or ``exported``, the file
    already in an MMEngine model run by ``runtime``); compare (module docstring). ``subset``: the test set is the
    first images of the split (its AP is then taken on those images only)."""
    import torch

    from fltool.engine import runner as rn
    from fltool.engine.metrics import coco_metrics

    onnx_model = exported or onnx_detector(onnx_file, runner.cfg.model.get("data_preprocessor"))
    post = onnx_model.backend.meta.postprocess
    loader = runner.test_dataloader
    evaluator_cfg = evaluator_cfg_for(runner, subset)
    evaluators = [runner.build_evaluator(copy.deepcopy(evaluator_cfg)) for _ in range(2)]
    for ev in evaluators:
        ev.dataset_meta = loader.dataset.metainfo
    totals = dict(matched=0, borderline=0, unmatched=0)
    min_iou, max_diff, n_ref, n_got, images = 1.0, 0.0, 0, 0, 0
    stage = f"checking: PyTorch vs {runtime} on the test set"
    with rn.translate_errors(), torch.no_grad():
        for b, batch in enumerate(loader):
            progress(ProgressEvent("stage", stage, b, len(loader)))
            outputs = model.test_step(batch)
            ref = [_detections(s) for s in outputs]
            evaluators[0].process(data_samples=outputs, data_batch=batch)  # copies what it needs now
            outputs = onnx_model.test_step(batch)
            got = [_detections(s) for s in outputs]
            evaluators[1].process(data_samples=outputs, data_batch=batch)
            for r, g in zip(ref, got):
                found = match_detections(r, g, score_thr=post["score_thr"], max_per_img=post["max_per_img"])
                for key in totals:
                    totals[key] += found[key]
                min_iou, max_diff = min(min_iou, found["min_iou"]), max(max_diff, found["max_score_diff"])
                n_ref, n_got, images = n_ref + len(r), n_got + len(g), images + 1
        progress(ProgressEvent("stage", stage, len(loader), len(loader)))
        metrics = [coco_metrics(ev.evaluate(len(loader.dataset))) for ev in evaluators]
    return ParityReport(images, n_ref, n_got, totals["matched"], totals["borderline"], totals["unmatched"], min_iou,
                        max_diff, metrics[0], metrics[1], runtime=runtime)
