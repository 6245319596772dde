"""Table 1b: focal loss gamma 5 with its best alpha 0.25. Paper AP/AP50/AP75: 32.2/49.6/34.8."""
_base_ = '../retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=5.0, alpha=0.25)))
