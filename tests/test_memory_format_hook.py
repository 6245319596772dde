"""ChannelsLastHook: NHWC weights, same results."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

import fltool_plugins  # noqa: F401
from fltool.engine.config import load_config
from fltool_plugins.hooks import ChannelsLastHook


def test_channels_last_hook_converts_conv_weights_and_keeps_the_outputs(tiny_config):
    register_all_modules(init_default_scope=True)
    model = MODELS.build(load_config(tiny_config).model)
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        before = model(x, mode="tensor")
    ChannelsLastHook().before_run(SimpleNamespace(model=model))
    conv = model.backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    with torch.no_grad():
        after = model(x, mode="tensor")
    for a_level, b_level in zip(after, before):
        for a, b in zip(a_level, b_level):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
