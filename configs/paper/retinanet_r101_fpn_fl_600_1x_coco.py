"""RetinaNet R-101-FPN, focal loss (gamma 2, alpha 0.25), 600 px, 1x (90k iters at batch 16): the paper's setup."""
_base_ = './retinanet_r50_fpn_fl_600_1x_coco.py'

model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
