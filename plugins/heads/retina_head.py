"""The RetinaNet head of the paper, as a small subclass of MMDetection's ``RetinaHead``.

What differs from ``RetinaHead`` (everything else — the two 4 x (3x3 conv, ReLU) subnets, the anchors, the
assignment — is MMDetection's):
- the classification conv's bias starts at the prior b = -log((1 - pi) / pi) from ``prior_prob`` (configurable;
  pi = 0.01 in the paper), every other new conv at N(0, 0.01) with bias 0;
- the losses default to fltool's ``SigmoidFocalLoss`` (gamma 2, alpha 0.25) and smooth L1 (beta 0.11, Detectron's);
- the loss is normalised by max(1, number of positive anchors in the batch) (MMDetection counts at least one per
  image), so an image without objects gives a finite loss;
- the number of positive anchors per image is reported to the log as ``num_pos``, and the mean predicted
  probability of the true class over the positive anchors as ``pos_prob`` (a model collapsing to background shows
  as ``pos_prob`` falling towards 0).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS

from ..prior import bias_prior

PAPER_ANCHORS = dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                     strides=[8, 16, 32, 64, 128])


@MODELS.register_module()
class FocalRetinaHead(RetinaHead):
    """RetinaNet head (Lin et al. 2017, section 4) with a configurable prior and positive-anchor logging.

    Args:
        num_classes: Number of object classes K (no background class: sigmoid outputs).
        in_channels: Channels of the FPN levels.
        stacked_convs: Convs in each subnet (paper: 4).
        feat_channels: Width of the subnets (paper: 256).
        prior_prob: pi of the bias prior (paper: 0.01).
        anchor_generator: Anchors (paper: 3 octave scales x 3 ratios, strides 8..128, base size 4 x stride).
        **kwargs: Everything ``RetinaHead``/``AnchorHead`` take (``norm_cfg``, ``loss_cls``, ``loss_bbox``, ...).
    """

    def __init__(self, num_classes: int, in_channels: int, *, stacked_convs: int = 4, feat_channels: int = 256,
                 prior_prob: float = 0.01, anchor_generator: Optional[dict] = None,
                 loss_cls: Optional[dict] = None, loss_bbox: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, **kwargs: Any) -> None:
        self.prior_prob = prior_prob
        if init_cfg is None:
            init_cfg = dict(type="Normal", layer="Conv2d", std=0.01,
                            override=dict(type="Normal", name="retina_cls", std=0.01, bias=bias_prior(prior_prob)))
        super().__init__(
            num_classes, in_channels, stacked_convs=stacked_convs, feat_channels=feat_channels,
            anchor_generator=anchor_generator or dict(PAPER_ANCHORS),
            loss_cls=loss_cls or dict(type="SigmoidFocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25,
                                      loss_weight=1.0),
            loss_bbox=loss_bbox or dict(type="SmoothL1Loss", beta=0.11, loss_weight=1.0),
            init_cfg=init_cfg, **kwargs)
        self._num_pos = 0.0

    def get_targets(self, *args: Any, **kwargs: Any) -> tuple:
        """``AnchorHead.get_targets`` with the paper's normaliser: max(1, positive anchors in the batch).

        (MMDetection's ``SamplingResult`` counts at least one positive per image, so a batch with empty images
        would be divided by too much.)
        """
        targets = super().get_targets(*args, **kwargs)
        labels_list, label_weights_list = targets[0], targets[1]
        self._num_pos = float(sum(((labels < self.num_classes) & (weights > 0)).sum()
                                  for labels, weights in zip(labels_list, label_weights_list)))
        self._targets = (labels_list, label_weights_list)  # for diagnostics(), read once
        return targets[:4] + (max(self._num_pos, 1.0),) + targets[5:]

    def diagnostics(self, cls_scores: list, num_imgs: int) -> dict:
        """Logged beside the losses, not losses (no 'loss' in the keys: MMEngine logs them without adding them
        up): ``num_pos``, positive anchors per image; ``pos_prob``, the mean sigmoid probability of the true class
        over the batch's positive anchors (left out when there are none)."""
        new = cls_scores[0].new_tensor
        out = {"num_pos": new(self._num_pos / max(num_imgs, 1))}
        labels_list, weights_list = getattr(self, "_targets", ([], []))
        self._targets = ([], [])
        with torch.no_grad():
            probs = []
            for score, labels, weights in zip(cls_scores, labels_list, weights_list):
                # (N, A*K, H, W) -> (N*HWA, K), the order of labels (N, HWA) flattened
                logits = score.detach().permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
                labels, weights = labels.reshape(-1), weights.reshape(-1)
                positive = (labels < self.num_classes) & (weights > 0)
                probs.append(logits[positive].gather(1, labels[positive][:, None]).sigmoid().flatten())
            probs = torch.cat(probs) if probs else new([])
            if probs.numel():
                out["pos_prob"] = probs.mean()
        return out

    def loss_by_feat(self, cls_scores: list, bbox_preds: list, batch_gt_instances: list, batch_img_metas: list,
                     batch_gt_instances_ignore: Optional[list] = None) -> dict:
        losses = super().loss_by_feat(cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                                      batch_gt_instances_ignore)
        losses.update(self.diagnostics(cls_scores, len(batch_img_metas)))
        return losses
