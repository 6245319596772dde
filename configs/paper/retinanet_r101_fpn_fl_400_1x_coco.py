"""RetinaNet R-101-FPN, focal loss, trained and tested at 400 px (Table 1e / Figure 2 speed-accuracy point)."""
_base_ = './retinanet_r101_fpn_fl_600_1x_coco.py'

scale = (666, 400)
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageChecked'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]))
test_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageChecked'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]))
val_dataloader = test_dataloader
