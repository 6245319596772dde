"""RetinaNet R-101-FPN, focal loss, trained and tested at 800 px (Table 1e / Figure 2 speed-accuracy point)."""
_base_ = './retinanet_r50_fpn_fl_800_1x_coco.py'

model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
