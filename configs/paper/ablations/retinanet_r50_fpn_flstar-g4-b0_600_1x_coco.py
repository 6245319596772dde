"""Table 3: FL* with gamma 4, beta 0 (alpha 0.25). Paper AP/AP50/AP75: 33.9/51.8/36.4."""
_base_ = '../retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='SigmoidFocalLossStar', use_sigmoid=True, gamma=4.0, beta=0.0, alpha=0.25,
    loss_weight=1.0)))
