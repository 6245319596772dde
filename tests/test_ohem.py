"""OHEM for the dense head: which anchors are selected (hand-made inputs), the exactness of the prefix NMS, the head
that trains CE on the selected anchors alone, the sweep presets, and a seconds-long training run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.structures import InstanceData
from typer.testing import CliRunner

import fltool_plugins  # noqa: F401  (registers the plugins)
from fltool.cli.main import app
from fltool.engine import sweep as sw
from fltool.errors import ConfigError
from fltool_plugins.losses.ohem import check_ohem_args, ohem_select

register_all_modules(init_default_scope=True)


def square(x: float, y: float, side: float = 10.0) -> list:
    return [x, y, x + side, y + side]


def select(losses, boxes, positive=None, valid=None, **kwargs):
    n = len(losses)
    positive = torch.zeros(n, dtype=torch.bool) if positive is None else torch.tensor(positive)
    valid = torch.ones(n, dtype=torch.bool) if valid is None else torch.tensor(valid)
    mask = ohem_select(torch.tensor(losses, dtype=torch.float32), torch.tensor(boxes, dtype=torch.float32),
                       positive, valid, **kwargs)
    return set(mask.nonzero().flatten().tolist())


# ---------------------------------------------------------------------------------------------- the selection

def test_without_nms_the_b_hardest_counted_anchors_are_kept_and_ignored_ones_never():
    boxes = [square(30 * i, 0) for i in range(6)]  # no two overlap
    losses = [9.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    valid = [False, True, True, True, True, True]  # anchor 0 (the hardest) is ignored: label weight 0
    assert select(losses, boxes, valid=valid, num=3, nms_thr=None) == {1, 2, 3}
    assert select(losses, boxes, valid=valid, num=10, nms_thr=None) == {1, 2, 3, 4, 5}


def test_nms_drops_an_anchor_whose_box_overlaps_a_harder_one_above_the_threshold():
    # anchors 0 and 1 overlap with IoU 9/11 = 0.82; 2 and 3 overlap nothing
    boxes = [square(0, 0), square(1, 0), square(40, 40), square(80, 80)]
    losses = [5.0, 4.0, 3.0, 1.0]
    assert select(losses, boxes, num=2, nms_thr=0.5) == {0, 2}  # 1 is suppressed by the harder 0
    assert select(losses, boxes, num=3, nms_thr=0.5) == {0, 2, 3}
    assert select(losses, boxes, num=2, nms_thr=0.9) == {0, 1}  # 0.82 < 0.9: both survive
    assert select(losses, boxes, num=2, nms_thr=None) == {0, 1}


def test_an_ignored_anchor_suppresses_nothing():
    boxes = [square(0, 0), square(1, 0), square(40, 40)]
    losses = [9.0, 4.0, 3.0]
    assert select(losses, boxes, valid=[False, True, True], num=2, nms_thr=0.5) == {1, 2}


def test_ratio_keeps_the_hardest_positives_up_to_a_quarter_and_three_negatives_per_positive():
    boxes = [square(30 * (i % 20), 30 * (i // 20)) for i in range(40)]  # no overlaps
    losses = [float(40 - i) for i in range(40)]  # anchor i is the (i+1)-th hardest
    positive = [i in (5, 9, 20, 30) for i in range(40)]
    # B = 8: at most 2 positives (the two hardest: 5 and 9), then 6 negatives (0-4 and 6)
    assert select(losses, boxes, positive, num=8, pos_fraction=0.25, nms_thr=0.5) == {5, 9, 0, 1, 2, 3, 4, 6}
    # one positive only: 1 positive and at most 3 negatives, although B = 8 would allow 7
    one = [i == 30 for i in range(40)]
    assert select(losses, boxes, one, num=8, pos_fraction=0.25, nms_thr=0.5) == {30, 0, 1, 2}
    # no positive: nothing at all (an image without objects gives no sample under the ratio)
    assert select(losses, boxes, [False] * 40, num=8, pos_fraction=0.25, nms_thr=0.5) == set()
    # without the ratio the same image gives the 8 hardest, whatever their labels
    assert select(losses, boxes, positive, num=8, nms_thr=0.5) == set(range(8))


def test_under_the_ratio_nms_runs_within_each_label():
    # positive 1 overlaps the harder negative 0 (kept: labels apart); positive 3 overlaps the harder positive 2
    boxes = [square(0, 0), square(1, 0), square(40, 40), square(41, 40), square(80, 80), square(120, 120)]
    losses = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0]
    positive = [False, True, True, True, False, False]
    chosen = select(losses, boxes, positive, num=8, pos_fraction=0.25, nms_thr=0.5)
    assert chosen == {1, 2, 0, 4, 5}  # positives 1 and 2; 3 suppressed by 2; negatives 0, 4, 5 (3 per positive max)


@pytest.mark.parametrize("nms_thr", [0.5, 0.7])
@pytest.mark.parametrize("pos_fraction", [None, 0.25])
@pytest.mark.parametrize("num", [16, 64])
def test_the_prefix_nms_selects_exactly_what_nms_over_every_anchor_would(nms_thr, pos_fraction, num):
    from mmcv.ops import nms
    from mmdet.models.task_modules.prior_generators import AnchorGenerator

    gen = AnchorGenerator(octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32])
    anchors = torch.cat(gen.grid_priors([(16, 16), (8, 8), (4, 4)], device="cpu"))  # a 128 px image: 3024 anchors
    g = torch.Generator().manual_seed(int(nms_thr * 10) + num)
    boxes = anchors + torch.randn(anchors.shape, generator=g) * 3  # predicted boxes near their anchors
    losses = torch.rand(len(anchors), generator=g) ** 3
    positive = torch.rand(len(anchors), generator=g) < 0.02
    valid = torch.rand(len(anchors), generator=g) > 0.05

    def full_nms(order):  # greedy NMS over every candidate, in decreasing loss
        _, keep = nms(boxes[order], torch.arange(len(order), 0, -1, dtype=torch.float32), nms_thr)
        return order[keep.sort().values]

    order = valid.nonzero().flatten()
    order = order[torch.sort(losses[order], descending=True, stable=True).indices]
    if pos_fraction is None:
        expected = full_nms(order)[:num]
    else:
        pos = full_nms(order[positive[order]])[:round(num * pos_fraction)]
        neg = full_nms(order[~positive[order]])[:min(num - len(pos), 3 * len(pos))]
        expected = torch.cat([pos, neg])
    mask = ohem_select(losses, boxes, positive, valid, num=num, pos_fraction=pos_fraction, nms_thr=nms_thr)
    assert set(mask.nonzero().flatten().tolist()) == set(expected.tolist())
    assert 0 < int(mask.sum()) <= num and not bool((mask & ~valid).any())


@pytest.mark.parametrize("num, pos_fraction, nms_thr", [(0, None, 0.5), (128, 1.0, 0.5), (128, None, 0.0),
                                                        (128, None, 1.5), (12.5, None, 0.5)])
def test_bad_ohem_settings_are_refused(num, pos_fraction, nms_thr):
    with pytest.raises(ValueError):
        check_ohem_args(num, pos_fraction, nms_thr)


# ---------------------------------------------------------------------------------------------- the head

IMG = 128
METAS = [dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG), scale_factor=(1.0, 1.0), batch_input_shape=(IMG, IMG))]


def make_head(head_type: str, **extra):
    cfg = dict(type=head_type, num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
               loss_cls=dict(type="SigmoidFocalLoss", use_sigmoid=True, gamma=0.0, alpha=None, loss_weight=1.0),
               train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                            ignore_iof_thr=-1),
                              sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False),
               **extra)
    torch.manual_seed(0)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def head_inputs(head):
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, 8, IMG // s, IMG // s, generator=g) for s in (8, 16, 32, 64, 128)]
    cls_scores, bbox_preds = head(feats)
    cls_scores = [s.detach().requires_grad_() for s in cls_scores]
    gt = InstanceData()
    gt.bboxes = torch.tensor([[10.0, 10.0, 50.0, 40.0], [70.0, 60.0, 100.0, 110.0]])
    gt.labels = torch.tensor([0, 2])
    return cls_scores, bbox_preds, [gt]


def test_ohem_head_selecting_every_anchor_gives_the_plain_ce_loss_of_focal_retina_head():
    plain = make_head("FocalRetinaHead")
    everything = make_head("OHEMRetinaHead", ohem=dict(num=10 ** 6, nms_thr=None))
    everything.load_state_dict(plain.state_dict())
    cls_scores, bbox_preds, gts = head_inputs(plain)
    expected = plain.loss_by_feat(cls_scores, bbox_preds, gts, METAS)
    got = everything.loss_by_feat(cls_scores, bbox_preds, gts, METAS)
    assert sum(got["loss_cls"]).item() == pytest.approx(sum(expected["loss_cls"]).item(), rel=1e-5)
    assert sum(got["loss_bbox"]).item() == pytest.approx(sum(expected["loss_bbox"]).item(), rel=1e-5)
    assert got["num_pos"].item() == expected["num_pos"].item() > 0


def test_ohem_head_trains_the_classifier_on_the_selected_anchors_alone():
    head = make_head("OHEMRetinaHead", ohem=dict(num=32, pos_fraction=0.25, nms_thr=0.5))
    cls_scores, bbox_preds, gts = head_inputs(head)
    losses = head.loss_by_feat(cls_scores, bbox_preds, gts, METAS)
    sum(losses["loss_cls"]).backward()
    # (1, A*K, H, W) -> (anchors, K): anchors whose class logits got a gradient
    grads = torch.cat([s.grad.permute(0, 2, 3, 1).reshape(-1, 3) for s in cls_scores])
    trained = int((grads.abs().sum(1) > 0).sum())
    selected_pos, selected_neg = losses["ohem_pos"].item(), losses["ohem_neg"].item()
    assert trained == selected_pos + selected_neg
    assert 0 < selected_pos <= 8 and selected_neg <= 3 * selected_pos  # B = 32 at 1:3


def two_image_inputs(head):
    """Outputs for two images, the first with the two boxes of head_inputs, the second without objects."""
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(2, 8, IMG // s, IMG // s, generator=g) for s in (8, 16, 32, 64, 128)]
    cls_scores, bbox_preds = head(feats)
    cls_scores = [(s.detach() + torch.randn(s.shape, generator=g)).requires_grad_() for s in cls_scores]  # varied
    (_, _, gts), empty = head_inputs(head), InstanceData()
    empty.bboxes, empty.labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    return cls_scores, [b.detach() for b in bbox_preds], gts + [empty]


@pytest.mark.parametrize("ohem", [dict(num=32, pos_fraction=0.25, nms_thr=0.5), dict(num=64, nms_thr=0.5)])
def test_ohem_head_divides_the_ce_of_the_selected_anchors_by_the_batch_positives(ohem):
    head = make_head("OHEMRetinaHead", ohem=ohem)
    plain = make_head("FocalRetinaHead")
    plain.load_state_dict(head.state_dict())
    cls_scores, bbox_preds, gts = two_image_inputs(head)
    losses = head.loss_by_feat(cls_scores, bbox_preds, gts, METAS * 2)
    expected = plain.loss_by_feat(cls_scores, bbox_preds, gts, METAS * 2)

    targets = head.anchor_targets(cls_scores, gts, METAS * 2)
    selected = head.select_hard_examples(cls_scores, bbox_preds, targets)  # (N, anchors)
    labels = torch.cat(targets.labels, 1)  # (N, anchors); background = 3
    # (N, A*K, H, W) -> (N, HWA, K) per level, then all levels: (N, anchors, K)
    logits = torch.cat([s.detach().permute(0, 2, 3, 1).reshape(2, -1, 3) for s in cls_scores], 1)
    one_hot = torch.nn.functional.one_hot(labels, 4)[..., :3].float()  # (N, anchors, K)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, one_hot, reduction="none").sum(2)
    num_pos = int((labels < 3).sum())  # every positive of the batch, selected or not; none in the second image
    assert num_pos > 0 and int(selected[1].sum()) == (0 if ohem.get("pos_fraction") else 64)
    assert sum(losses["loss_cls"]).item() == pytest.approx(ce[selected].sum().item() / num_pos, rel=1e-5)
    # the box loss and the diagnostics are FocalRetinaHead's: all positives, whatever OHEM selected
    assert sum(losses["loss_bbox"]).item() == pytest.approx(sum(expected["loss_bbox"]).item(), rel=1e-6)
    assert losses["num_pos"].item() == expected["num_pos"].item() == pytest.approx(num_pos / 2)
    assert losses["pos_prob"].item() == pytest.approx(expected["pos_prob"].item(), rel=1e-6)
    assert losses["ohem_pos"].item() == pytest.approx(int((selected & (labels < 3)).sum()) / 2)
    assert losses["ohem_neg"].item() == pytest.approx(int((selected & (labels == 3)).sum()) / 2)


def test_ohem_head_sets_no_attribute_during_loss_and_each_call_logs_its_own_batch():
    head = make_head("OHEMRetinaHead", ohem=dict(num=32, pos_fraction=0.25, nms_thr=0.5))
    one = head_inputs(head)
    two = two_image_inputs(head)
    before = dict(vars(head))
    first = head.loss_by_feat(*one, METAS)
    head.loss_by_feat(*two, METAS * 2)
    again = head.loss_by_feat(*one, METAS)
    assert vars(head).keys() == before.keys()
    assert [k for k in before if vars(head)[k] is not before[k]] == []  # nothing rebound
    for key in ("num_pos", "pos_prob", "ohem_pos", "ohem_neg"):
        assert again[key].item() == first[key].item()
    assert sum(again["loss_cls"]).item() == sum(first["loss_cls"]).item()


def test_ohem_head_refuses_unknown_settings():
    with pytest.raises(TypeError, match="unknown ohem keys"):
        make_head("OHEMRetinaHead", ohem=dict(batch=128))
    with pytest.raises(ValueError, match="nms_thr"):
        make_head("OHEMRetinaHead", ohem=dict(nms_thr=2.0))


# ---------------------------------------------------------------------------------------------- the presets

@pytest.mark.parametrize("name, canonical, ohem", [
    ("OHEM", "OHEM-b128", dict(num=128, pos_fraction=None, nms_thr=0.5)),
    ("ohem-b256", "OHEM-b256", dict(num=256, pos_fraction=None, nms_thr=0.5)),
    ("OHEM-1:3-b128", "OHEM-1:3-b128", dict(num=128, pos_fraction=0.25, nms_thr=0.5)),
    ("OHEM-b128-nms0.7", "OHEM-b128-nms0.7", dict(num=128, pos_fraction=None, nms_thr=0.7)),
    ("OHEM-1:3-b512-nmsNone", "OHEM-1:3-b512-nmsNone", dict(num=512, pos_fraction=0.25, nms_thr=None)),
])
def test_ohem_presets_name_the_head_settings_and_train_plain_ce(name, canonical, ohem):
    got, loss = sw.loss_preset(name)
    assert got == canonical
    assert (loss["type"], loss["gamma"], loss["alpha"]) == ("SigmoidFocalLoss", 0.0, None)
    head = sw.presets.preset_head_options(name)
    assert head.pop("model.bbox_head.type") == "OHEMRetinaHead"
    assert head == {f"+model.bbox_head.ohem.{k}": v for k, v in ohem.items()}
    assert sw.presets.preset_head_options("FL") == {}


@pytest.mark.parametrize("bad", ["OHEM-b0", "OHEM-nms1.5", "OHEM-g2", "OHEM-1:4-b128"])
def test_bad_ohem_preset_names_are_refused(bad):
    with pytest.raises(ConfigError):
        sw.loss_preset(bad)


def test_a_sweep_over_fl_and_ohem_switches_the_head_only_for_the_ohem_point(tiny_config):
    grid = sw.build_grid(tiny_config, ["loss=FL,OHEM-1:3-b128"])
    fl, ohem = grid.points
    assert "model.bbox_head.type" not in fl.cfg_options
    assert ohem.cfg_options["model.bbox_head.type"] == "OHEMRetinaHead"
    flat = grid.flat_options[ohem.id]
    assert "+model.bbox_head.ohem.pos_fraction=0.25" in flat and "model.bbox_head.loss_cls.gamma=0.0" in flat


# ---------------------------------------------------------------------------------------------- training

def test_a_sweep_point_with_ohem_trains_and_logs_its_selection(tiny_config, tmp_path):
    work = tmp_path / "sweep"
    result = CliRunner().invoke(app, ["sweep", tiny_config, "--work-dir", str(work), "--set", "loss=OHEM-1:3-b16",
                                      "--seeds", "0"])
    assert result.exit_code == 0, result.output
    data = json.loads((work / "results.json").read_text())
    run = data["points"][0]["runs"][0]
    assert run["status"] == "finished" and run["metrics"]["AP"] is not None
    assert "model.bbox_head.type=OHEMRetinaHead" in run["train_command"]
    scalars = [json.loads(line) for path in Path(run["work_dir"]).glob("*/vis_data/scalars.json")
               for line in path.read_text().splitlines()]
    logged = [s for s in scalars if "ohem_pos" in s]
    assert logged, "the head logs its selection"
    for s in logged:  # B = 16 at 1:3: at most 4 positives and 3 negatives per positive, per image
        assert 0 < s["ohem_pos"] <= 4 and s["ohem_neg"] <= 3 * s["ohem_pos"]
