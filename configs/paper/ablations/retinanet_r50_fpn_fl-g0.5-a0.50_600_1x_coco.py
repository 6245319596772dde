"""Table 1b: focal loss gamma 0.5 with its best alpha 0.50. Paper AP/AP50/AP75: 32.9/51.7/35.2."""
_base_ = '../retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.5, alpha=0.5)))
