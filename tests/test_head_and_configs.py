"""FocalRetinaHead (prior, init, normalisation, positives) and the shipped configs."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.structures import InstanceData

import fltool_plugins  # noqa: F401  (registers the plugins)
from fltool.engine.config import list_configs, load_config
from fltool.engine.runner import unknown_types
from fltool_plugins.losses.functional import sigmoid_focal_loss
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

register_all_modules(init_default_scope=True)

IMG = 128
METAS = [dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG), scale_factor=(1.0, 1.0), batch_input_shape=(IMG, IMG))]


def make_head(**overrides):
    cfg = dict(type="FocalRetinaHead", num_classes=3, in_channels=8, feat_channels=8, stacked_convs=2,
               train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                            ignore_iof_thr=-1),
                              sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False))
    cfg.update(overrides)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def feats(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 8, IMG // s, IMG // s, generator=g) for s in (8, 16, 32, 64, 128)]


def instances(boxes):
    gt = InstanceData()
    gt.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    gt.labels = torch.zeros(len(boxes), dtype=torch.long)
    return gt


@pytest.mark.parametrize("pi", [0.01, 0.1])
def test_prior_makes_every_initial_score_about_pi(pi):
    head = make_head(prior_prob=pi)
    cls_scores, _ = head(feats())
    probs = torch.cat([s.sigmoid().flatten() for s in cls_scores])
    assert probs.mean().item() == pytest.approx(pi, rel=0.05)
    assert probs.min().item() > pi * 0.8 and probs.max().item() < pi * 1.25
    assert head.retina_cls.bias.detach() == pytest.approx(torch.full_like(head.retina_cls.bias, -math.log((1 - pi) / pi)))


def test_other_new_convs_start_gaussian_std_0_01_with_zero_bias():
    head = make_head(feat_channels=64, in_channels=64)
    conv = head.cls_convs[0].conv
    assert conv.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.all(conv.bias == 0) and torch.all(head.retina_reg.bias == 0)
    assert head.retina_reg.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_paper_defaults_are_the_heads_defaults():
    head = make_head()
    assert head.anchor_generator.num_base_priors[0] == 9
    assert head.anchor_generator.strides == [(8, 8), (16, 16), (32, 32), (64, 64), (128, 128)]
    assert type(head.loss_cls).__name__ == "SigmoidFocalLoss"
    assert (head.loss_cls.gamma, head.loss_cls.alpha) == (2.0, 0.25)
    assert type(head.loss_bbox).__name__ == "SmoothL1Loss"


def test_empty_image_gives_positive_cls_loss_and_zero_box_loss():
    head = make_head()
    losses = head.loss_by_feat(*head(feats()), [instances([])], METAS)
    assert sum(losses["loss_cls"]).item() > 0
    assert sum(losses["loss_bbox"]).item() == 0
    assert losses["num_pos"].item() == 0


def test_one_box_gives_positive_cls_and_box_losses_and_reports_positives():
    head = make_head()
    losses = head.loss_by_feat(*head(feats()), [instances([[20.0, 20.0, 60.0, 60.0]])], METAS)
    assert sum(losses["loss_cls"]).item() > 0 and sum(losses["loss_bbox"]).item() > 0
    assert losses["num_pos"].item() >= 1


def test_classification_loss_is_the_focal_sum_divided_by_the_number_of_positives():
    head = make_head()
    cls_scores, bbox_preds = head(feats(1))
    gt = [instances([[20.0, 20.0, 60.0, 60.0], [70.0, 10.0, 120.0, 50.0]])]
    losses = head.loss_by_feat(cls_scores, bbox_preds, gt, METAS)
    num_pos = losses["num_pos"].item()
    anchors, valid = head.get_anchors([s.shape[-2:] for s in cls_scores], METAS, device="cpu")
    labels_per_level, weights_per_level, *_ = head.get_targets(anchors, valid, gt, METAS)
    labels = torch.cat([level[0] for level in labels_per_level])
    weights = torch.cat([level[0] for level in weights_per_level])
    logits = torch.cat([s.permute(0, 2, 3, 1).reshape(-1, 3) for s in cls_scores])  # (1, A*K, H, W) -> (HWA, K)
    total = sigmoid_focal_loss(logits, labels, weight=weights, reduction="sum", backend="torch")
    assert num_pos == (labels < 3).sum().item() > 0
    assert sum(losses["loss_cls"]).item() == pytest.approx(total.item() / num_pos, rel=1e-5)


def test_pos_prob_is_the_mean_true_class_probability_of_the_positive_anchors():
    head = make_head()
    cls_scores, bbox_preds = head(feats(1))
    gt = [instances([[20.0, 20.0, 60.0, 60.0], [70.0, 10.0, 120.0, 50.0]])]
    with torch.no_grad():  # class 0 of every anchor certain, the other classes not: the positives (class 0) give 1
        for score in cls_scores:
            score.view(1, -1, 3, *score.shape[-2:])[:, :, 0] = 20.0
    losses = head.loss_by_feat(cls_scores, bbox_preds, gt, METAS)
    assert losses["pos_prob"].item() == pytest.approx(1.0, abs=1e-6)
    gt[0].labels[:] = 1  # now the true class is 1, whose logits are the initial ones: about pi = 0.01
    losses = head.loss_by_feat(cls_scores, bbox_preds, gt, METAS)
    assert losses["pos_prob"].item() == pytest.approx(0.01, rel=0.3)
    empty = head.loss_by_feat(cls_scores, bbox_preds, [instances([])], METAS)
    assert "pos_prob" not in empty and empty["num_pos"].item() == 0


@pytest.mark.parametrize("info", list_configs(), ids=lambda c: c.name)
def test_every_shipped_config_loads_and_every_type_resolves(info):
    cfg = load_config(info.path)
    assert unknown_types(cfg) == []
    assert cfg.model.bbox_head.type == "FocalRetinaHead"
    assert cfg.model.bbox_head.loss_cls.use_sigmoid is True
    assert info.summary, f"{info.name} has no docstring summary"
