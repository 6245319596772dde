"""For `fltool train --data` (the default): the machine-sized RetinaNet R-18/GN from scratch, up to 320 px, 4k iters."""
_base_ = ['../_base_/retinanet_r18-gn_small.py']

# A recipe: the model, schedule and pipelines of retinanet_r18-gn_synth_256 without a dataset. `fltool train --data
# PATH` adds one: the dataloaders, the classes (num_classes) and the input size, written out as a full config.
fltool_data_recipe = True
fltool_max_scale = (320, 320)  # input: the images' median size fitted within this (long, short), never enlarged

model = dict(bbox_head=dict(num_classes=1))  # set to the number of classes of the data
train_pipeline = [
    dict(type='LoadImageChecked'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=fltool_max_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageChecked'),
    dict(type='Resize', scale=fltool_max_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# The schedule of retinanet_r18-gn_bccd_320, the from-scratch recipe tested on real photos: 4,000 iterations of 4
# images (~55 epochs of 300 images; --max-iters scales it), warm-up, steps at 2/3 and 8/9.
train_cfg = dict(max_iters=4000, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=1000))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=4000, milestones=[2667, 3547], gamma=0.1),
]
