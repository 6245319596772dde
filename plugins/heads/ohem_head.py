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
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
from mmdet.models.utils import images_to_levels, multi_apply
from mmdet.registry import MODELS
from mmdet.structures.bbox import cat_boxes, get_box_tensor

from ..losses.ohem import check_ohem_args, ohem_select
from .retina_head import FocalRetinaHead

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
        self._ohem_counts = (0.0, 0.0)

    def hard_example_weights(self, cls_scores: List[torch.Tensor], bbox_preds: List[torch.Tensor],
                             anchors_per_image: List[torch.Tensor], labels_list: List[torch.Tensor],
                             label_weights_list: List[torch.Tensor]) -> List[torch.Tensor]:
        """The label weights per level with every anchor OHEM does not select set to 0."""
        num_imgs, num_classes = cls_scores[0].shape[0], self.cls_out_channels
        num_level_anchors = [labels.shape[1] for labels in labels_list]
        with torch.no_grad():
            # (N, A*K, H, W) -> (N, HWA, K) per level, then all levels: (N, anchors, K), the anchors' order
            logits = torch.cat([s.detach().permute(0, 2, 3, 1).reshape(num_imgs, -1, num_classes)
                                for s in cls_scores], 1)
            # (N, A*4, H, W) -> (N, HWA, 4) likewise
            deltas = torch.cat([b.detach().permute(0, 2, 3, 1).reshape(num_imgs, -1, self.bbox_coder.encode_size)
                                for b in bbox_preds], 1)
            labels = torch.cat(labels_list, 1)  # (N, anchors); background = num_classes
            weights = torch.cat(label_weights_list, 1)  # (N, anchors); 0 = ignored
            masks = []
            for i in range(num_imgs):
                # (anchors, K) -> (anchors,): an anchor's loss is that of its K binary classifiers
                score = self.loss_cls(logits[i], labels[i], reduction_override="none").reshape(
                    logits.shape[1], -1).sum(1)
                boxes = get_box_tensor(self.bbox_coder.decode(anchors_per_image[i], deltas[i]))
                masks.append(ohem_select(score, boxes, labels[i] < num_classes, weights[i] > 0,
                                         num=self.ohem["num"], pos_fraction=self.ohem["pos_fraction"],
                                         nms_thr=self.ohem["nms_thr"]))
            mask = torch.stack(masks)  # (N, anchors)
            positive = labels < num_classes
            self._ohem_counts = (float((mask & positive).sum()) / num_imgs, float((mask & ~positive).sum()) / num_imgs)
        return list(torch.split(weights * mask.to(weights.dtype), num_level_anchors, dim=1))

    def loss_by_feat(self, cls_scores: list, bbox_preds: list, batch_gt_instances: list, batch_img_metas: list,
                     batch_gt_instances_ignore: Optional[list] = None) -> dict:
        """``AnchorHead.loss_by_feat`` with the OHEM selection between the targets and the per-level losses."""
        featmap_sizes = [featmap.size()[-2:] for featmap in cls_scores]
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, batch_img_metas, device=cls_scores[0].device)
        (labels_list, label_weights_list, bbox_targets_list, bbox_weights_list, avg_factor) = self.get_targets(
            anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore=batch_gt_instances_ignore)
        num_level_anchors = [anchors.size(0) for anchors in anchor_list[0]]
        anchors_per_image = [cat_boxes(anchors) for anchors in anchor_list]  # (anchors, 4) per image
        label_weights_list = self.hard_example_weights(cls_scores, bbox_preds, anchors_per_image, labels_list,
                                                       label_weights_list)
        all_anchor_list = images_to_levels(anchors_per_image, num_level_anchors)
        losses_cls, losses_bbox = multi_apply(self.loss_by_feat_single, cls_scores, bbox_preds, all_anchor_list,
                                              labels_list, label_weights_list, bbox_targets_list, bbox_weights_list,
                                              avg_factor=avg_factor)
        new = cls_scores[0].new_tensor
        return dict(loss_cls=losses_cls, loss_bbox=losses_bbox, **self.diagnostics(cls_scores, len(batch_img_metas)),
                    ohem_pos=new(self._ohem_counts[0]), ohem_neg=new(self._ohem_counts[1]))
