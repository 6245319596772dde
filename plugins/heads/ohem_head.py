"""RetinaNet trained with online hard example mining (OHEM) instead of the focal loss: the paper's Table 1d rival.

MMDetection's ``OHEMSampler`` serves RoI heads only, and ``AnchorHead`` computes its loss one pyramid level at a
time, while OHEM ranks the anchors of an image over all levels together. So this head overrides ``loss_by_feat``
(as MMDetection's dense heads do when their loss needs more than one level): it assigns the anchors as
``FocalRetinaHead`` does, scores every anchor by its classification loss, keeps per image the anchors that
:func:`fltool_plugins.losses.ohem.ohem_select` selects (NMS over the predicted boxes, then the B hardest, optionally
at 1:3), and gives the other anchors label weight 0; then the per-level losses run unchanged on those weights.

- The classification loss is the config's ``loss_cls``: plain cross entropy (``SigmoidFocalLoss`` with gamma 0 and no
  alpha) in the ``OHEM-...`` sweep presets, as in the paper ("train CE on those alone"). The same loss scores the
  anchors (summed over the K classes: an anchor's CE is that of its K binary classifiers).
- Normalisation: the summed loss of the selected anchors is divided by max(1, the number of positive anchors in the
  batch), the normaliser of ``FocalRetinaHead`` (the paper's section 3.3 / 4.1) and of SSD, whose 1:3 OHEM the
  paper tests (SSD divides by the number of matched boxes). The paper states no other normaliser for Table 1d, which
  varies only the example selection within its RetinaNet; keeping the normaliser keeps the classification and box
  losses at the balance they have under CE and FL, so the comparison varies which anchors are trained and nothing
  else. (A per-minibatch mean over the B selected anchors, Fast R-CNN's OHEM, would scale the classification loss
  against the box loss by num_pos / (B x images) and so change two things at once.)
- The box loss is untouched: every positive anchor, as in RetinaNet (OHEM here selects classification samples).
- Logged (not losses): ``num_pos`` and ``pos_prob`` as ``FocalRetinaHead``; ``ohem_pos`` and ``ohem_neg``, the
  positive and negative anchors selected per image.
- The anchors, targets, normaliser, per-level losses and diagnostics are ``FocalRetinaHead``'s own code
  (``anchor_targets``, ``loss_from_targets``); this head only inserts the selection between them.
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
from mmdet.registry import MODELS
from mmdet.structures.bbox import get_box_tensor
from torch import Tensor

from ..losses.ohem import check_ohem_args, ohem_select
from .retina_head import AnchorTargets, FocalRetinaHead, full_precision

#: The paper's best OHEM (Table 1d): no ratio, B = 128, NMS at IoU 0.5.
DEFAULT_OHEM = dict(num=128, pos_fraction=None, nms_thr=0.5)


@MODELS.register_module()
class OHEMRetinaHead(FocalRetinaHead):
    """``FocalRetinaHead`` whose classification loss covers only the anchors OHEM selects per image.

    Args:
        ohem: ``dict(num=B, pos_fraction=None or f, nms_thr=IoU or None)``; missing keys take the paper's best
            (B = 128, no ratio, NMS 0.5). ``pos_fraction=0.25`` is "OHEM 1:3".
        *args, **kwargs: as :class:`FocalRetinaHead`.
    """

    def __init__(self, *args: Any, ohem: Optional[dict] = None, **kwargs: Any) -> None:
        unknown = sorted(set(ohem or {}) - set(DEFAULT_OHEM))
        if unknown:
            raise TypeError(f"OHEMRetinaHead: unknown ohem keys {unknown}; it takes {sorted(DEFAULT_OHEM)}")
        settings = {**DEFAULT_OHEM, **(ohem or {})}
        check_ohem_args(settings["num"], settings["pos_fraction"], settings["nms_thr"])
        self.ohem = settings
        super().__init__(*args, **kwargs)

    def loss_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], batch_gt_instances: list,
                     batch_img_metas: list, batch_gt_instances_ignore: Optional[list] = None) -> dict:
        """``FocalRetinaHead.loss_by_feat`` with the OHEM selection between the targets and the per-level losses."""
        with full_precision(cls_scores[0]):
            cls_scores, bbox_preds = [s.float() for s in cls_scores], [p.float() for p in bbox_preds]
            return self._ohem_losses(cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                                     batch_gt_instances_ignore)

    def _ohem_losses(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], batch_gt_instances: list,
                     batch_img_metas: list, batch_gt_instances_ignore: Optional[list]) -> dict:
        targets = self.anchor_targets(cls_scores, batch_gt_instances, batch_img_metas, batch_gt_instances_ignore)
        selected = self.select_hard_examples(cls_scores, bbox_preds, targets)  # (N, anchors), all levels
        # (N, anchors) -> per level (N, anchors_l); the classification weights: 0 at every anchor not selected
        num_level_anchors = [labels.shape[1] for labels in targets.labels]
        cls_weights = [weights * selected_per_level.to(weights.dtype) for weights, selected_per_level
                       in zip(targets.label_weights, torch.split(selected, num_level_anchors, dim=1))]
        losses = self.loss_from_targets(cls_scores, bbox_preds, targets, cls_weights=cls_weights)
        # logged: the positive and negative anchors selected, per image
        positive = torch.cat(targets.labels, 1) < self.num_classes  # (N, anchors)
        num_imgs = cls_scores[0].shape[0]
        new = cls_scores[0].new_tensor
        losses.update(ohem_pos=new(float((selected & positive).sum()) / num_imgs),
                      ohem_neg=new(float((selected & ~positive).sum()) / num_imgs))
        return losses

    def select_hard_examples(self, cls_scores: List[Tensor], bbox_preds: List[Tensor],
                             targets: AnchorTargets) -> Tensor:
        """Per image, the anchors OHEM selects: (N, anchors) bool over all levels, in the order of the levels."""
        num_imgs, num_classes = cls_scores[0].shape[0], self.cls_out_channels
        with torch.no_grad():
            # (N, A*K, H, W) -> (N, HWA, K) per level, then all levels: (N, anchors, K), the anchors' order
            logits = torch.cat([s.detach().permute(0, 2, 3, 1).reshape(num_imgs, -1, num_classes)
                                for s in cls_scores], 1)
            # (N, A*4, H, W) -> (N, HWA, 4) likewise
            deltas = torch.cat([b.detach().permute(0, 2, 3, 1).reshape(num_imgs, -1, self.bbox_coder.encode_size)
                                for b in bbox_preds], 1)
            anchors = torch.cat(targets.anchors, 1)  # per level (N, anchors_l, 4) -> (N, anchors, 4)
            labels = torch.cat(targets.labels, 1)  # (N, anchors); background = num_classes
            weights = torch.cat(targets.label_weights, 1)  # (N, anchors); 0 = ignored
            selected = []
            for i in range(num_imgs):
                # (anchors, K) -> (anchors,): an anchor's loss is that of its K binary classifiers
                score = self.loss_cls(logits[i], labels[i], reduction_override="none").reshape(
                    logits.shape[1], -1).sum(1)
                boxes = get_box_tensor(self.bbox_coder.decode(anchors[i], deltas[i]))
                selected.append(ohem_select(score, boxes, labels[i] < num_classes, weights[i] > 0,
                                            num=self.ohem["num"], pos_fraction=self.ohem["pos_fraction"],
                                            nms_thr=self.ohem["nms_thr"]))
        return torch.stack(selected)
