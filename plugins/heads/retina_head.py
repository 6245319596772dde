"""The RetinaNet head of the paper, as a small subclass of MMDetection's ``RetinaHead``.

What differs from ``RetinaHead`` (everything else — the two 4 x (3x3 conv, ReLU) subnets, the anchors, the
assignment — is MMDetection's):
- the classification conv's bias starts at the prior b = -log((1 - pi) / pi) from ``prior_prob`` (configurable;
  pi = 0.01 in the paper), every other new conv at N(0, 0.01) with bias 0;
- the losses default to fltool's ``SigmoidFocalLoss`` (gamma 2, alpha 0.25) and smooth L1 (beta 0.11, Detectron's);
- ``loss_by_feat`` computes the anchors and their targets once, then the normaliser, the per-level losses and the
  diagnostics from those same targets, passed as arguments (nothing is kept on the module between calls);
- the loss is normalised by max(1, number of positive anchors in the batch) (MMDetection's ``avg_factor`` counts at
  least one per image), so an image without objects gives a finite loss;
- the number of positive anchors per image is reported to the log as ``num_pos``, and the mean predicted
  probability of the true class over the positive anchors as ``pos_prob`` (a model collapsing to background shows
  as ``pos_prob`` falling towards 0).
"""
from __future__ import annotations

from typing import Any, List, NamedTuple, Optional

import torch
from mmdet.models.dense_heads import RetinaHead
from mmdet.models.utils import images_to_levels, multi_apply
from mmdet.registry import MODELS
from mmdet.structures.bbox import cat_boxes
from torch import Tensor

from ..prior import bias_prior

PAPER_ANCHORS = dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                     strides=[8, 16, 32, 64, 128])


class AnchorTargets(NamedTuple):
    """The anchors of a batch and their training targets from the head's assigner, one tensor per pyramid level.

    N images; anchors_l = H * W * A anchors at level l, ordered as a head output permuted to (N, H, W, A*K).
    """

    anchors: List[Tensor]  # (N, anchors_l, 4): the anchor boxes
    labels: List[Tensor]  # (N, anchors_l): class index of the assigned box; background = num_classes
    label_weights: List[Tensor]  # (N, anchors_l): > 0 counted, 0 ignored (between the IoU thresholds)
    bbox_targets: List[Tensor]  # (N, anchors_l, 4): the encoded deltas from the anchor to its assigned box
    bbox_weights: List[Tensor]  # (N, anchors_l, 4): > 0 at the positive anchors only

    def positives(self, num_classes: int) -> List[Tensor]:
        """Per level (N, anchors_l): the anchors assigned to a box (label < K) and not ignored (weight > 0)."""
        return [(labels < num_classes) & (weights > 0) for labels, weights in zip(self.labels, self.label_weights)]


def full_precision(like: Tensor) -> Any:
    """A context in which autocast is off on ``like``'s device: under mixed precision (``--precision bf16`` on the
    CPU, fp16/bf16 on a GPU) only the network runs in low precision; anchors, assignment, the losses (sums over
    ~100k anchors) and NMS run in fp32."""
    return torch.autocast(device_type=like.device.type, enabled=False)


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

    def loss_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], batch_gt_instances: list,
                     batch_img_metas: list, batch_gt_instances_ignore: Optional[list] = None) -> dict:
        """The losses of a batch (``loss_cls``, ``loss_bbox``: one value per level) and the diagnostics.

        Args:
            cls_scores: Per level, the class logits (N, A*K, H, W).
            bbox_preds: Per level, the box deltas (N, A*4, H, W).
            batch_gt_instances: Per image, the boxes and labels.
            batch_img_metas: Per image, its meta information (shapes).
            batch_gt_instances_ignore: Per image, boxes whose anchors are ignored, or None.
        """
        with full_precision(cls_scores[0]):
            cls_scores, bbox_preds = [s.float() for s in cls_scores], [p.float() for p in bbox_preds]
            targets = self.anchor_targets(cls_scores, batch_gt_instances, batch_img_metas,
                                          batch_gt_instances_ignore)
            return self.loss_from_targets(cls_scores, bbox_preds, targets, cls_weights=targets.label_weights)

    def predict_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], *args: Any, **kwargs: Any) -> list:
        """MMDetection's decoding and NMS, in fp32 whatever the autocast the network ran under."""
        with full_precision(cls_scores[0]):
            return super().predict_by_feat([s.float() for s in cls_scores], [p.float() for p in bbox_preds],
                                           *args, **kwargs)

    def anchor_targets(self, cls_scores: List[Tensor], batch_gt_instances: list, batch_img_metas: list,
                       batch_gt_instances_ignore: Optional[list] = None) -> AnchorTargets:
        """The anchors of every level and their targets from MMDetection's assigner (``get_anchors``,
        ``get_targets``), computed once per batch."""
        featmap_sizes = [score.shape[-2:] for score in cls_scores]
        # per image, per level: the anchors (anchors_l, 4) and whether each lies inside the image (anchors_l,)
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, batch_img_metas, device=cls_scores[0].device)
        (labels,  # per level (N, anchors_l): class index; background = num_classes
         label_weights,  # per level (N, anchors_l): 0 = ignored
         bbox_targets,  # per level (N, anchors_l, 4): encoded deltas to the assigned box
         bbox_weights,  # per level (N, anchors_l, 4): > 0 at the positives
         _) = self.get_targets(  # MMDetection's avg_factor, unused: it counts at least one positive per image
            anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore=batch_gt_instances_ignore)
        num_level_anchors = [anchors.size(0) for anchors in anchor_list[0]]
        # per image (anchors, 4), all levels together -> per level (N, anchors_l, 4)
        anchors = images_to_levels([cat_boxes(anchors) for anchors in anchor_list], num_level_anchors)
        return AnchorTargets(anchors, labels, label_weights, bbox_targets, bbox_weights)

    def loss_from_targets(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], targets: AnchorTargets,
                          cls_weights: List[Tensor]) -> dict:
        """The per-level losses divided by the paper's normaliser, and the diagnostics, from one batch's targets.

        ``cls_weights`` (per level, (N, anchors_l)) weigh the classification loss of each anchor:
        ``targets.label_weights``, or those with the anchors an example selection drops set to 0 (OHEM). The
        normaliser and the diagnostics count the positives of ``targets`` itself, whatever the selection.
        """
        positives = targets.positives(self.num_classes)  # per level (N, anchors_l)
        num_pos = float(sum(positive.sum() for positive in positives))
        # The paper's normaliser: the summed loss over all anchors / the positive anchors in the batch, at least 1 so
        # that a batch without objects has a finite loss.
        avg_factor = max(1.0, num_pos)
        losses_cls, losses_bbox = multi_apply(self.loss_by_feat_single, cls_scores, bbox_preds, targets.anchors,
                                              targets.labels, cls_weights, targets.bbox_targets, targets.bbox_weights,
                                              avg_factor=avg_factor)
        return dict(loss_cls=losses_cls, loss_bbox=losses_bbox,
                    **self.diagnostics(cls_scores, targets.labels, positives))

    def diagnostics(self, cls_scores: List[Tensor], labels: List[Tensor], positives: List[Tensor]) -> dict:
        """Logged beside the losses, not losses (no 'loss' in the keys: MMEngine logs them without adding them
        up): ``num_pos``, positive anchors per image; ``pos_prob``, the mean sigmoid probability of the true class
        over the batch's positive anchors (left out when there are none).

        Args:
            cls_scores: Per level, the class logits (N, A*K, H, W).
            labels: Per level, the anchors' labels (N, anchors_l).
            positives: Per level, which anchors are positive (N, anchors_l).
        """
        num_imgs = cls_scores[0].shape[0]
        new = cls_scores[0].new_tensor
        out = {"num_pos": new(float(sum(positive.sum() for positive in positives)) / max(num_imgs, 1))}
        with torch.no_grad():
            probs = []
            for score, labels_per_level, positive in zip(cls_scores, labels, positives):
                # (N, A*K, H, W) -> (N*HWA, K), the order of labels (N, HWA) flattened
                logits = score.detach().permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
                labels_per_level, positive = labels_per_level.reshape(-1), positive.reshape(-1)  # (N, HWA) -> (N*HWA,)
                probs.append(logits[positive].gather(1, labels_per_level[positive][:, None]).sigmoid().flatten())
            probs = torch.cat(probs) if probs else new([])
            if probs.numel():
                out["pos_prob"] = probs.mean()
        return out
