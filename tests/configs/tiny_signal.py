"""tiny_synth, 6 iterations, which signals itself after iteration 3 (SIGINT unless +signum=15 is given)."""
_base_ = ['./tiny_synth.py']
custom_imports = dict(imports=['fltool_plugins', 'helpers_plugins'], allow_failed_imports=False)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='SelfSignalHook', at_iter=3, signum=2)]
train_cfg = dict(max_iters=6, val_interval=6)
default_hooks = dict(checkpoint=dict(interval=10))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=6, milestones=[4], gamma=0.1),
]
