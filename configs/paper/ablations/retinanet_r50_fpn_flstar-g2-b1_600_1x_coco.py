"""Table 3: FL* with gamma 2, beta 1 (alpha 0.25). Paper AP/AP50/AP75: 33.8/52.7/36.3."""
_base_ = '../retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='SigmoidFocalLossStar', use_sigmoid=True, gamma=2.0, beta=1.0, alpha=0.25,
    loss_weight=1.0)))
