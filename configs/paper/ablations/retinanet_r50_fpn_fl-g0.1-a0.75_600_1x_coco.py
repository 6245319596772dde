"""Table 1b: focal loss gamma 0.1 with its best alpha 0.75. Paper AP/AP50/AP75: 31.4/49.9/33.1."""
_base_ = '../retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.1, alpha=0.75)))
