"""fltool's runtime defaults, layered over MMDetection's: plugins, atomic checkpoints, guards, iteration logs."""
custom_imports = dict(imports=['fltool_plugins'], allow_failed_imports=False)

default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3),
    logger=dict(type='LoggerHook', interval=20),
)
custom_hooks = [dict(type='NonFiniteLossHook')]
