"""A run that must learn, in well under a minute: two easy classes, large shapes, no noise, no distractors.

The suite's other tiny runs are too short to learn anything (their AP is noise); tests that compare AP between code
paths, or that claim training works, use this one.
"""
_base_ = ['./tiny_synth.py']

fltool_synth_spec = dict(image_size=128, num_train=16, num_val=8, classes=('circle', 'square'),
                         class_weights=(0.5, 0.5), objects_per_image=(1, 3), distractors_per_image=(0, 0),
                         size_mix=(0.0, 1.0, 0.0), medium_side=(36, 64), noise_std=0.0, seed=1)
classes = ('circle', 'square')
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 128, 255)])
scale = (128, 128)
model = dict(neck=dict(out_channels=32), bbox_head=dict(num_classes=2, in_channels=32, feat_channels=32),
             test_cfg=dict(score_thr=0.05, nms_pre=100, max_per_img=20))
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
train_dataloader = dict(batch_size=4, dataset=dict(metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, dataset=dict(metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=3e-3))
train_cfg = dict(max_iters=300, val_interval=300)
default_hooks = dict(checkpoint=dict(interval=300, max_keep_ckpts=1), logger=dict(interval=10))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=300, milestones=[240], gamma=0.1),
]
