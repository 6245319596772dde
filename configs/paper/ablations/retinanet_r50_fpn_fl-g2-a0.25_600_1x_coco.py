"""Table 1b: focal loss gamma 2 with its best alpha 0.25. Paper AP/AP50/AP75: 34.0/52.5/36.5."""
_base_ = '../retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=2.0, alpha=0.25)))
