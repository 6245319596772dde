"""FocalRetinaHead (prior, init, normalisation, positives) and the shipped configs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps
from mmdet.utils import register_all_modules
from mmengine.structures import InstanceData

import fltool_plugins  # noqa: F401  (registers the plugins)
from fltool.engine.config import list_configs, load_config
from fltool.engine.runner import unknown_types
from fltool_plugins.losses.functional import sigmoid_focal_loss

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
    expected_bias = torch.full_like(head.retina_cls.bias, -math.log((1 - pi) / pi))
    assert head.retina_cls.bias.detach() == pytest.approx(expected_bias)


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


# A hand-built batch: random logits and deltas (not the head's: its prior makes every logit alike), two images, the
# first with two boxes that are anchors exactly, the second without objects.
STRIDES = (8, 16, 32, 64, 128)
K = 3


def metas(n: int) -> list:
    return METAS * n


def random_outputs(n: int, seed: int, size: int = IMG):
    """Per level: class logits (n, A*K, H, W) and box deltas (n, A*4, H, W), A = 9."""
    g = torch.Generator().manual_seed(seed)
    cls_scores = [torch.randn(n, 9 * K, size // s, size // s, generator=g) * 2 for s in STRIDES]
    bbox_preds = [torch.randn(n, 9 * 4, size // s, size // s, generator=g) * 0.1 for s in STRIDES]
    return cls_scores, bbox_preds


def hand_built_batch():
    # P4 (stride 16), centre (32, 48), ratio 1:1, scale 2^0: a 64 px square; P3 (stride 8), centre (80, 96), 32 px
    boxes = [[0.0, 16.0, 64.0, 80.0], [64.0, 80.0, 96.0, 112.0]]
    gt = instances(boxes)
    gt.labels = torch.tensor([2, 0])
    return [gt, instances([])]


def direct_targets(anchors: torch.Tensor, gt: InstanceData):
    """The paper's assignment written out for one image: positive at IoU >= 0.5 (label of the best box), negative
    below 0.4, ignored between. (Every box here is an anchor, so MMDetection's best-anchor rule adds nothing.)
    Returns labels (anchors,) with background = K, counted (anchors,) and the matched boxes (anchors, 4)."""
    if len(gt) == 0:
        return torch.full((len(anchors),), K), torch.ones(len(anchors), dtype=torch.bool), torch.zeros_like(anchors)
    max_iou, best = bbox_overlaps(anchors, gt.bboxes).max(1)  # (anchors, boxes) -> (anchors,)
    positive = max_iou >= 0.5
    labels = torch.where(positive, gt.labels[best], torch.full_like(best, K))
    return labels, positive | (max_iou < 0.4), gt.bboxes[best]


def focal_loss_sum(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25):
    """FL summed over anchors and classes, as torchvision writes it; labels (anchors,) with background = K."""
    targets = F.one_hot(labels, K + 1)[:, :K].to(logits.dtype)  # (anchors, K); background: all zeros
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * ce * (1 - p_t) ** gamma).sum()


def box_deltas(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(dx, dy, dw, dh) from anchors to boxes, both (M, 4) x1y1x2y2 (DeltaXYWH, means 0, stds 1)."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    bx, by = boxes[:, 0] + bw / 2, boxes[:, 1] + bh / 2
    return torch.stack([(bx - ax) / aw, (by - ay) / ah, torch.log(bw / aw), torch.log(bh / ah)], 1)


def test_losses_are_sums_over_anchors_divided_by_the_batch_positives_with_an_image_without_objects():
    head = make_head()
    cls_scores, bbox_preds = random_outputs(2, seed=3)
    gts = hand_built_batch()
    losses = head.loss_by_feat(cls_scores, bbox_preds, gts, metas(2))

    anchor_list, _ = head.get_anchors([s.shape[-2:] for s in cls_scores], metas(2), device="cpu")
    anchors = torch.cat(anchor_list[0])  # (anchors, 4), all levels; the same for both images
    for box in gts[0].bboxes:  # the hand-built boxes are anchors, as the comment above says
        assert bool((anchors == box).all(1).any())
    focal, smooth_l1, probs, num_pos = 0.0, 0.0, [], 0
    for i, gt in enumerate(gts):
        # per level (N, A*K, H, W) -> (HWA, K) for image i, then all levels: (anchors, K)
        logits = torch.cat([s[i].permute(1, 2, 0).reshape(-1, K) for s in cls_scores])
        deltas = torch.cat([b[i].permute(1, 2, 0).reshape(-1, 4) for b in bbox_preds])  # likewise (anchors, 4)
        labels, counted, matched = direct_targets(anchors, gt)
        positive = labels < K
        focal = focal + focal_loss_sum(logits[counted], labels[counted])
        error = (deltas[positive] - box_deltas(anchors[positive], matched[positive])).abs()
        smooth_l1 = smooth_l1 + torch.where(error < 0.11, 0.5 * error ** 2 / 0.11, error - 0.5 * 0.11).sum()
        probs.append(logits[positive].gather(1, labels[positive][:, None]).sigmoid().flatten())
        num_pos += int(positive.sum())
    assert num_pos >= 2  # at least the two anchors that are the boxes, all in the first image
    assert losses["num_pos"].item() == pytest.approx(num_pos / 2)
    # the paper's normaliser: the positives of the batch (MMDetection's avg_factor would count num_pos + 1 here)
    assert sum(losses["loss_cls"]).item() == pytest.approx(focal.item() / num_pos, rel=1e-5)
    assert sum(losses["loss_bbox"]).item() == pytest.approx(smooth_l1.item() / num_pos, rel=1e-5)
    assert losses["pos_prob"].item() == pytest.approx(torch.cat(probs).mean().item(), rel=1e-5)


def test_a_batch_without_objects_divides_the_summed_loss_by_one():
    head = make_head()
    cls_scores, bbox_preds = random_outputs(2, seed=4)
    losses = head.loss_by_feat(cls_scores, bbox_preds, [instances([]), instances([])], metas(2))
    # every anchor is a negative: (N, A*K, H, W) -> (N*HWA, K) per level
    focal = sum(focal_loss_sum(s.permute(0, 2, 3, 1).reshape(-1, K), torch.full((s.numel() // K,), K))
                for s in cls_scores)
    assert sum(losses["loss_cls"]).item() == pytest.approx(focal.item(), rel=1e-5)
    assert sum(losses["loss_bbox"]).item() == 0 and losses["num_pos"].item() == 0 and "pos_prob" not in losses


def test_each_call_reports_the_diagnostics_of_its_own_batch_whatever_came_before():
    batches = [(random_outputs(2, seed=5), hand_built_batch(), metas(2)),
               (random_outputs(1, seed=6), [instances([])], metas(1)),
               (random_outputs(1, seed=7, size=64), [instances([[8.0, 8.0, 40.0, 48.0]])],
                [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0), batch_input_shape=(64, 64))])]

    def losses_of(head, batch):
        (cls_scores, bbox_preds), gts, batch_metas = batch
        return {k: float(sum(v)) if isinstance(v, list) else float(v)
                for k, v in head.loss_by_feat(cls_scores, bbox_preds, gts, batch_metas).items()}

    used = make_head()
    in_sequence = [losses_of(used, batch) for batch in batches + batches[::-1]]
    fresh = [losses_of(make_head(), batch) for batch in batches + batches[::-1]]
    assert in_sequence == fresh
    assert in_sequence[0]["num_pos"] > 0 and in_sequence[1]["num_pos"] == 0 and "pos_prob" not in in_sequence[1]


def test_computing_the_loss_sets_no_attribute_on_the_head():
    head = make_head()
    cls_scores, bbox_preds = random_outputs(2, seed=8)
    before = dict(vars(head))
    head.loss_by_feat(cls_scores, bbox_preds, hand_built_batch(), metas(2))
    after = vars(head)
    assert after.keys() == before.keys()
    # not rebound either (MMDetection's own get_targets fills its dict _raw_positive_infos in place)
    assert [k for k in before if after[k] is not before[k]] == []


@pytest.mark.parametrize("info", list_configs(), ids=lambda c: c.name)
def test_every_shipped_config_loads_and_every_type_resolves(info):
    cfg = load_config(info.path)
    assert unknown_types(cfg) == []
    assert cfg.model.bbox_head.type == "FocalRetinaHead"
    assert cfg.model.bbox_head.loss_cls.use_sigmoid is True
    assert info.summary, f"{info.name} has no docstring summary"
