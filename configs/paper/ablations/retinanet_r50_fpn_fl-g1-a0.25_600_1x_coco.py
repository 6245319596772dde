"""Table 1b: focal loss gamma 1 with its best alpha 0.25. Paper AP/AP50/AP75: 33.7/52.0/36.2."""
_base_ = '../retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=1.0, alpha=0.25)))
