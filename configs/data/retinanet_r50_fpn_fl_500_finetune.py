"""For `fltool train --data`: the paper's RetinaNet R-50-FPN, ImageNet backbone, fine-tuned at up to 833x500 px."""
_base_ = ['../paper/retinanet_r50_fpn_fl_600_1x_coco.py']

# A recipe: the paper's model (R-50-FPN, focal loss gamma 2 alpha 0.25, prior 0.01, the backbone initialised from
# torchvision://resnet50 with its first stage and BatchNorm frozen, as MMDetection does) with a short SGD schedule
# for a few hundred to a few thousand images. `fltool train --data PATH` adds the dataset, classes and input size.
# Starting from a whole COCO-trained RetinaNet instead: add --load-from <MMDetection's retinanet_r50_fpn_1x_coco .pth>.
fltool_data_recipe = True
fltool_max_scale = (833, 500)  # the paper's 500 px scale (shorter side 500, longer at most 833), never enlarged

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
train_dataloader = dict(batch_size=4, num_workers=2, sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(pipeline=train_pipeline, filter_cfg=dict(filter_empty_gt=True, min_size=4)))
val_dataloader = dict(batch_size=4, num_workers=2, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# SGD as in the paper, lr scaled linearly from 0.01 at 16 images to 4 images; 2,000 iterations with a warm-up and
# two steps. --max-iters scales the steps with the length.
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.0025, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=4)
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2000, val_interval=2000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=200),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=2000, milestones=[1500, 1850], gamma=0.1),
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=500), logger=dict(interval=20))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
