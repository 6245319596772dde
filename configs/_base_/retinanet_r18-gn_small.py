"""The machine-sized RetinaNet: ResNet-18 at half width + FPN (P3-P7), 96-channel GroupNorm subnets, from scratch.

Kept from the paper: focal loss (gamma 2, alpha 0.25) normalised by the positives, the prior pi = 0.01, 9 anchors
per location (3 octave scales x 3 ratios, base size 4 x stride on strides 8..128), IoU 0.5/0.4 assignment, smooth
L1 box loss, P7 = conv(ReLU(P6)). Changed for a 2-core CPU and no ImageNet weights: a narrower backbone and head,
GroupNorm in the subnets, AdamW with warm-up and gradient clipping instead of SGD.
"""
_base_ = './retinanet_fltool.py'

model = dict(
    backbone=dict(depth=18, base_channels=32, out_indices=(1, 2, 3), frozen_stages=-1, norm_eval=False,
                  norm_cfg=dict(type='BN', requires_grad=True), init_cfg=None),
    neck=dict(in_channels=[64, 128, 256], out_channels=128, start_level=0, add_extra_convs='on_input',
              num_outs=5, relu_before_extra_convs=True),
    bbox_head=dict(
        _delete_=True,
        type='FocalRetinaHead',
        num_classes=80,
        in_channels=128,
        feat_channels=96,
        stacked_convs=4,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        prior_prob=0.01,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='SigmoidFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=1.0)),
)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    # fused: PyTorch's one-kernel AdamW (the same update; one pass over the parameters instead of a dozen)
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, fused=True),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=600, milestones=[400, 530], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=8)

# Data: COCO-format folders (data_root with train.json, val.json, images/); configs set data_root and pipelines.
# InfiniteSampler, as MMDetection's own iteration-based configs (retinanet_r50_fpn_90k_coco.py): with the epoch-based
# DefaultSampler, MMEngine's IterBasedTrainLoop sleeps 2 s at every pass over the data (loops.py, "Prevent possible
# deadlock during epoch transition") -- 12 s of a 600-iteration default run, and most of a tiny test run.
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(ann_file='train.json', data_prefix=dict(img='images/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4)))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file='val.json', data_prefix=dict(img='images/')))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', metric='bbox', format_only=False)
test_evaluator = val_evaluator

# Iteration-based schedule, logs and checkpoints sized for minutes, not days.
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=600, val_interval=600)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=200), logger=dict(interval=20))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='ChannelsLastHook')]  # NHWC convs: ~13% faster on CPU
