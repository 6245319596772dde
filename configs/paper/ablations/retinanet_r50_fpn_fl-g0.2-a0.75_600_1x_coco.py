"""Table 1b: focal loss gamma 0.2 with its best alpha 0.75. Paper AP/AP50/AP75: 31.9/50.7/33.4."""
_base_ = '../retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.2, alpha=0.75)))
