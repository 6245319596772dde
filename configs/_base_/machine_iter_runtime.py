"""Iteration-based schedule defaults for the configs sized for a small CPU machine."""
_base_ = ['./fltool_runtime.py']

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=600, val_interval=600)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=200), logger=dict(interval=20))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
