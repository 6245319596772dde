"""RetinaNet R-101-FPN, focal loss (gamma 2, alpha 0.25), 600 px, 1x (90k iters at batch 16): the paper's setup."""
_base_ = '../_base_/retinanet_fltool.py'

scale = (1000, 600)  # shorter side 600, longer side at most 1000 (paper: "scale" = shorter side)

model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))

train_pipeline = [
    dict(type='LoadImageChecked'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageChecked'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# Paper: SGD, lr 0.01 at 16 images per batch, momentum 0.9, weight decay 1e-4 (mmdet's 1x: 12 epochs, steps 8/11).
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=16)
fltool_bench_scales = [400, 500, 600, 700, 800]
