"""RetinaNet R-18/GN from scratch on BCCD blood-cell photos (real data, 3 imbalanced classes) at 320x240."""
_base_ = ['../_base_/retinanet_r18-gn_small.py']

data_root = '{{fileDirname}}/../../../shared/data/bccd/'  # the BCCD copy beside the project (read in place)
classes = ('RBC', 'WBC', 'Platelets')
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 128, 255), (255, 200, 0)])
scale = (320, 240)

model = dict(bbox_head=dict(num_classes=3))

train_pipeline = [
    dict(type='LoadImageChecked'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageChecked'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'val.json')
test_evaluator = val_evaluator

# 4,000 iterations of 4 images (~55 epochs of the 292 training images); minutes measured: REPRODUCTION.md (BCCD).
train_cfg = dict(max_iters=4000, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=1000))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=4000, milestones=[2667, 3547], gamma=0.1),
]
fltool_bench_scales = [240, 320, 400]  # `fltool bench speed-accuracy` test scales (shorter side, px)
