"""Table 1a: alpha-balanced CE (FL with gamma 0), alpha 0.10. Paper AP/AP50/AP75: 0.0/0.0/0.0."""
_base_ = '../retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.0, alpha=0.1)))
