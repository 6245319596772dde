"""Test-only MMEngine hooks that inject faults at a chosen iteration (imported by tests/configs/*.py)."""
from __future__ import annotations

import os
import signal

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class PoisonWeightsHook(Hook):
    """Before iteration ``at_iter`` (1-based), fill the classification conv with NaN: the loss becomes NaN."""

    def __init__(self, at_iter: int):
        self.at_iter = at_iter

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at_iter:
            model = runner.model.module if hasattr(runner.model, "module") else runner.model
            with torch.no_grad():
                model.bbox_head.retina_cls.weight.fill_(float("nan"))


@HOOKS.register_module()
class SelfSignalHook(Hook):
    """After iteration ``at_iter`` (1-based), send ``signum`` to this process, as a user's Ctrl-C or kill would.

    ``ranks``: only these distributed ranks signal themselves (default: every process).
    """

    priority = "VERY_HIGH"

    def __init__(self, at_iter: int, signum: int = int(signal.SIGINT), ranks=None):
        self.at_iter = at_iter
        self.signum = signum
        self.ranks = ranks

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        from mmengine.dist import get_rank

        if runner.iter + 1 == self.at_iter and (self.ranks is None or get_rank() in self.ranks):
            os.kill(os.getpid(), self.signum)
