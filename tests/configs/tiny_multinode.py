"""tiny_synth with each rank's weights digest written at the end (tests/test_multinode.py)."""
_base_ = ['./tiny_synth.py']
custom_imports = dict(imports=['fltool_plugins', 'helpers_multinode'], allow_failed_imports=False)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='WeightsDigestHook')]
