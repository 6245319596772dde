"""Table 1a: alpha-balanced CE (FL with gamma 0), alpha 0.90. Paper AP/AP50/AP75: 30.8/49.7/32.3."""
_base_ = '../retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.0, alpha=0.9)))
