"""Hooks that stop training cleanly instead of letting it go wrong.

- ``NonFiniteLossHook``: MMEngine keeps training on a NaN/Inf loss (its ``CheckInvalidLossHook`` looks only every
  50 iterations by default) and the NaN weights then become ``last_checkpoint``. This hook checks every iteration,
  before the checkpoint hook runs, and raises :class:`NonFiniteLossError`, so no checkpoint is written after the
  first non-finite loss.
- ``StopRequestHook``: polls a stop request (set by a SIGINT/SIGTERM handler) after each iteration; on a request
  it saves a checkpoint of the last completed iteration through the run's checkpoint hook and raises
  :class:`TrainingStopped`. In distributed runs the request is agreed on by all ranks (max all-reduce), so every
  rank stops at the same iteration.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import CheckpointHook, Hook


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stopped at ``iteration`` (1-based)."""

    def __init__(self, message: str, iteration: int = -1, values: Optional[dict] = None):
        super().__init__(message)
        self.iteration = iteration
        self.values = values or {}


class TrainingStopped(RuntimeError):
    """Training stopped on request (a signal) after ``iteration`` completed iterations."""

    def __init__(self, message: str, signum: int = 0, iteration: int = -1, checkpoint: Optional[str] = None):
        super().__init__(message)
        self.signum = signum
        self.iteration = iteration
        self.checkpoint = checkpoint


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise :class:`NonFiniteLossError` on the first iteration whose loss terms are not all finite."""

    priority = "VERY_HIGH"  # before LoggerHook (BELOW_NORMAL) and CheckpointHook (VERY_LOW)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Optional[dict] = None):
        bad = {}
        for key, value in (outputs or {}).items():
            if "loss" not in key:
                continue
            number = float(value.detach().float().sum()) if isinstance(value, torch.Tensor) else float(value)
            if not math.isfinite(number):
                bad[key] = number
        if bad:
            iteration = runner.iter + 1
            terms = ", ".join(f"{k}={v}" for k, v in bad.items())
            raise NonFiniteLossError(f"non-finite loss at iteration {iteration} ({terms})", iteration, bad)


@HOOKS.register_module()
class StopRequestHook(Hook):
    """Stop after the current iteration when ``should_stop()`` returns a signal number (0 = keep going)."""

    priority = "LOWEST"  # after the checkpoint hook, so an interval checkpoint of this iteration is not written twice

    def __init__(self, should_stop: Callable[[], int]):
        self.should_stop = should_stop

    def _agreed_request(self) -> int:
        request = int(self.should_stop())
        if get_world_size() > 1:
            flag = torch.tensor([request], dtype=torch.int64)
            all_reduce(flag, op="max")
            request = int(flag.item())
        return request

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Optional[dict] = None):
        signum = self._agreed_request()
        if not signum:
            return
        completed = runner.iter + 1
        path = None
        ckpt_hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        if ckpt_hook is not None:
            # Epoch-based runs resume at the start of the unfinished epoch (meta epoch = epochs completed).
            step = runner.epoch if ckpt_hook.by_epoch else completed
            already = runner.message_hub.get_info("last_ckpt")
            if already is None or not str(already).endswith(ckpt_hook.filename_tmpl.format(step)):
                ckpt_hook._save_checkpoint_with_step(runner, step, dict(epoch=runner.epoch, iter=completed))
            path = runner.message_hub.get_info("last_ckpt")
        raise TrainingStopped(f"training stopped by signal {signum} after iteration {completed}", signum,
                              completed, path)
