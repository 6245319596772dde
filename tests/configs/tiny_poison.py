"""tiny_synth whose weights turn NaN before iteration 3 (after the checkpoint at iteration 2)."""
_base_ = ['./tiny_synth.py']
custom_imports = dict(imports=['fltool_plugins', 'helpers_plugins'], allow_failed_imports=False)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='PoisonWeightsHook', at_iter=3)]
