"""RetinaNet as one traceable module: image tensor in, final detections out (what ``fltool export`` writes to ONNX).

:class:`ExportableRetinaNet` is a thin wrapper over a built MMDetection single-stage detector with an anchor head.
It reuses the detector's own layers (backbone, FPN, both subnets via ``bbox_head.forward``), its anchor generator
(``prior_generator.grid_priors``) and its box coder (``bbox_coder.decode``); what differs from MMDetection's
``predict`` is written here, because MMDetection's post-processing does not trace into a static graph:

- per level, the top ``k = min(nms_pre, candidates)`` (anchor, class) logits, with ``k`` computed in the graph, so
  one graph serves every input size (MMDetection filters by score first, then takes the top ``nms_pre``; the top
  ``k`` filtered by score afterwards is the same set, as every score above the threshold ranks above every score
  below it); the sigmoid runs on those ``k`` only (it is monotonic, so the ranking is the logits');
- boxes are clipped to the image with tensor bounds (the coder's own ONNX clip imports an MMDetection 2.x module);
- boxes not wider and taller than ``min_bbox_size`` get score -1, so NMS drops them (MMDetection removes them);
- class-aware NMS is ONNX ``NonMaxSuppression`` over boxes offset per class (MMCV's ``batched_nms`` trick), with
  the score threshold and ``max_per_img`` as NMS inputs: the selected boxes come out in descending score order,
  as MMDetection's ``results[:max_per_img]`` keeps them.

The input is one normalised image, ``(1, 3, H, W)`` float32 (resized, mean/std applied, RGB/BGR as the config's
data preprocessor says), not padded: the graph pads it to the size divisor (zeros, as MMDetection pads after
normalising) and clips boxes to ``H x W``. Outputs: ``boxes (N, 4)`` x1 y1 x2 y2 in input pixels, ``scores (N,)``,
``labels (N,)`` int64, N <= max_per_img, best first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "labels")


@dataclass(frozen=True)
class PostProcess:
    """The test_cfg thresholds the graph applies (MMDetection's names and meanings)."""

    score_thr: float = 0.05
    nms_pre: int = 1000  # candidates per level before NMS; <= 0: all
    iou_threshold: float = 0.5
    max_per_img: int = 100
    min_bbox_size: float = -1.0  # boxes with width or height <= this are dropped; < 0: no filter

    @classmethod
    def from_test_cfg(cls, test_cfg: Any) -> "PostProcess":
        """From a model's ``test_cfg`` (ConfigDict or dict); raises ValueError for what the graph cannot do."""
        cfg = dict(test_cfg or {})
        nms = dict(cfg.get("nms") or {})
        kind = nms.get("type", "nms")
        if kind != "nms":
            raise ValueError(f"test_cfg.nms.type '{kind}' (only plain 'nms' exports to ONNX NonMaxSuppression)")
        return cls(score_thr=float(cfg.get("score_thr", 0.0)), nms_pre=int(cfg.get("nms_pre", -1)),
                   iou_threshold=float(nms.get("iou_threshold", 0.5)), max_per_img=int(cfg.get("max_per_img", 100)),
                   min_bbox_size=float(cfg.get("min_bbox_size", -1)))


class NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (opset >= 11) for one image and one class, with MMCV's NMS when run eagerly.

    ``boxes (1, M, 4)`` x1y1x2y2, ``scores (1, 1, M)`` -> ``selected (S, 3)`` int64 rows (batch 0, class 0, box
    index), in descending score order; a box is kept only when its score is above ``score_threshold`` and its IoU
    with every kept box is at most ``iou_threshold``; at most ``max_output`` rows.
    """

    @staticmethod
    def forward(ctx: Any, boxes: torch.Tensor, scores: torch.Tensor, max_output: torch.Tensor,
                iou_threshold: torch.Tensor, score_threshold: torch.Tensor) -> torch.Tensor:
        from mmcv.ops import nms

        flat_scores = scores[0, 0]
        candidates = torch.nonzero(flat_scores > score_threshold).flatten()
        _, keep = nms(boxes[0, candidates], flat_scores[candidates], float(iou_threshold))
        keep = candidates[keep[: int(max_output)]]
        zeros = torch.zeros_like(keep)
        return torch.stack([zeros, zeros, keep], dim=1)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, max_output: Any, iou_threshold: Any, score_threshold: Any) -> Any:
        return g.op("NonMaxSuppression", boxes, scores, max_output, iou_threshold, score_threshold,
                    center_point_box_i=0)


def _topk_count(num: torch.Tensor, nms_pre: int) -> Any:
    """``min(nms_pre, num)`` as a graph value (``num`` is a traced size), so TopK never asks for more than exist."""
    if nms_pre <= 0:
        return num
    return torch.clamp(num, max=nms_pre)


class ExportableRetinaNet(nn.Module):
    """An MMDetection RetinaNet (single-stage detector, anchor head, sigmoid classifier) from image to detections.

    Args:
        detector: the built detector with its weights (``SingleStageDetector``: backbone, neck, ``bbox_head`` with
            ``prior_generator`` and ``bbox_coder``), in eval mode.
        post: the thresholds (see :class:`PostProcess`).
        size_divisor: the detector's data preprocessor pads images to a multiple of this (``pad_size_divisor``).
    """

    def __init__(self, detector: nn.Module, post: PostProcess, size_divisor: int = 1) -> None:
        super().__init__()
        head = detector.bbox_head
        if not getattr(head, "use_sigmoid_cls", False):
            raise ValueError(f"{type(head).__name__} uses softmax scores; the export supports sigmoid heads")
        self.detector = detector
        self.post = post
        self.size_divisor = max(1, int(size_divisor))
        self.num_classes = int(head.num_classes)

    def forward(self, image: torch.Tensor) -> tuple:
        head = self.detector.bbox_head
        shape = torch._shape_as_tensor(image)  # traced sizes: the same graph serves every H x W
        height, width = shape[2], shape[3]
        if self.size_divisor > 1:
            pad_h = (self.size_divisor - height % self.size_divisor) % self.size_divisor
            pad_w = (self.size_divisor - width % self.size_divisor) % self.size_divisor
            image = F.pad(image, [0, pad_w, 0, pad_h])
        cls_scores, bbox_preds = head(self.detector.extract_feat(image))
        anchors = head.prior_generator.grid_priors([s.shape[-2:] for s in cls_scores], dtype=image.dtype,
                                                   device=image.device)
        k_classes = self.num_classes
        level_scores, level_labels, level_deltas, level_anchors = [], [], [], []
        for cls_score, bbox_pred, level_priors in zip(cls_scores, bbox_preds, anchors):
            logits = cls_score[0].permute(1, 2, 0).reshape(-1)  # (A*K, H, W) -> (H*W*A*K,)
            deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, 4)  # (A*4, H, W) -> (H*W*A, 4)
            k = _topk_count(torch._shape_as_tensor(logits)[0], self.post.nms_pre)
            top_logits, top_idx = logits.topk(k)
            anchor_idx = torch.div(top_idx, k_classes, rounding_mode="floor")
            level_scores.append(top_logits.sigmoid())
            level_labels.append(top_idx % k_classes)
            level_deltas.append(deltas[anchor_idx])
            level_anchors.append(level_priors[anchor_idx])
        scores = torch.cat(level_scores)
        labels = torch.cat(level_labels)
        boxes = head.bbox_coder.decode(torch.cat(level_anchors), torch.cat(level_deltas), max_shape=None)
        bound = torch.stack([width, height, width, height]).to(boxes.dtype)
        boxes = torch.min(torch.clamp(boxes, min=0), bound)  # clip to the (unpadded) image
        if self.post.min_bbox_size >= 0:
            wide = (boxes[:, 2] - boxes[:, 0] > self.post.min_bbox_size) & \
                   (boxes[:, 3] - boxes[:, 1] > self.post.min_bbox_size)
            scores = torch.where(wide, scores, torch.full_like(scores, -1.0))

        # class-aware NMS: boxes of different classes never overlap once shifted by class * (max coordinate + 1)
        offsets = labels.to(boxes.dtype) * (boxes.max() + 1)
        shifted = boxes + offsets[:, None]
        selected = NonMaxSuppression.apply(
            shifted[None], scores[None, None], torch.tensor([self.post.max_per_img], dtype=torch.int64),
            torch.tensor([self.post.iou_threshold], dtype=torch.float32),
            torch.tensor([self.post.score_thr], dtype=torch.float32))
        keep = selected[:, 2]
        return boxes[keep], scores[keep], labels[keep]
