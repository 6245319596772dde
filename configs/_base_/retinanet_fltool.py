"""MMDetection's RetinaNet R-50-FPN 1x with fltool's plugins: the paper's head, focal loss, prior and runtime."""
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['fltool_plugins'], allow_failed_imports=False)

model = dict(
    # Paper, section 4: P7 = 3x3 stride-2 conv on ReLU(P6).
    neck=dict(relu_before_extra_convs=True),
    bbox_head=dict(
        type='FocalRetinaHead',
        prior_prob=0.01,
        loss_cls=dict(type='SigmoidFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        # Paper: smooth L1 box loss (beta 0.11 as in Detectron's RetinaNet); MMDetection ships L1.
        loss_bbox=dict(_delete_=True, type='SmoothL1Loss', beta=0.11, loss_weight=1.0)),
)

default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', max_keep_ckpts=3))
custom_hooks = [dict(type='NonFiniteLossHook')]
