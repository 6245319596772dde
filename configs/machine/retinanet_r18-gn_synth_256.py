"""The default: RetinaNet R-18/GN, focal loss, from scratch on the embedded synthetic dataset, 256 px, 2-4 min."""
_base_ = ['../_base_/retinanet_r18-gn_small.py']

# The embedded dataset: generated on first use into fltool's cache (fltool.data.synth), from this spec.
data_root = 'fltool-synth://'
fltool_synth_spec = dict()  # SynthSpec defaults; e.g. dict(num_train=400) for a smaller set
classes = ('circle', 'square', 'triangle', 'cross')
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 128, 255), (255, 200, 0), (0, 160, 80)])
scale = (256, 256)

model = dict(bbox_head=dict(num_classes=4))

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
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'val.json')
test_evaluator = val_evaluator
fltool_bench_scales = [192, 256, 320]  # `fltool bench speed-accuracy` test scales (shorter side, px)
