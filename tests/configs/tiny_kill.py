"""tiny_synth, 6 iterations, checkpoints every 2; rank 1 dies by SIGKILL after iteration 3 in torchrun's first
attempt (tests/test_multinode.py: --max-restarts with --resume auto)."""
_base_ = ['./tiny_synth.py']
custom_imports = dict(imports=['fltool_plugins', 'helpers_multinode'], allow_failed_imports=False)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='KillOnceHook', at_iter=3, rank=1)]
train_cfg = dict(max_iters=6, val_interval=6)
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=5))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=6, milestones=[4], gamma=0.1),
]
