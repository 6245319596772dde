"""A seconds-long training config for the tests: a tiny RetinaNet on a tiny embedded dataset (160 px, 16 images)."""
_base_ = ['../../configs/machine/retinanet_r18-gn_synth_256.py']

fltool_synth_spec = dict(image_size=160, num_train=16, num_val=8, objects_per_image=(2, 5), size_mix=(0.5, 0.5, 0.0),
                         noise_std=0.0)
scale = (160, 160)
model = dict(
    backbone=dict(base_channels=8),
    neck=dict(in_channels=[16, 32, 64], out_channels=16),
    bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1, norm_cfg=dict(type='GN', num_groups=4)),
    test_cfg=dict(score_thr=0.0, nms_pre=100, max_per_img=50),  # always some detections: AP is defined
)
train_pipeline = [
    dict(type='LoadImageChecked'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageChecked'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=4, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=5), logger=dict(interval=1))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=4, milestones=[3], gamma=0.1),
]
randomness = dict(seed=0, deterministic=False)
