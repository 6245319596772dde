"""A benchmark-only MMEngine hook: when each training iteration started and ended, and each evaluation's AP.

``benchmarks/train_speed.py`` adds it to both runs it compares (stock MMDetection and fltool), so both are timed by
the same code: per-iteration seconds and, after each evaluation, the training seconds spent so far with the AP
reached. Written as JSON lines to ``out``. An iteration's time runs from the end of the previous one (or of an
evaluation) to the end of this one: it includes fetching the batch (MMEngine's loop does that before
``before_train_iter``; a sampler's pause between epochs is data time too) and excludes evaluations.
"""
from __future__ import annotations

import json
import time
from typing import Any, Optional

from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class IterClockHook(Hook):
    priority = "VERY_LOW"

    def __init__(self, out: str) -> None:
        self.out = out
        self.train_s = 0.0
        self._t0: Optional[float] = None
        self._start = time.perf_counter()
        self._iter_s: list = []

    def before_train(self, runner: Any) -> None:
        self._write({"event": "start_training", "since_start_s": time.perf_counter() - self._start})
        self._t0 = time.perf_counter()

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        now = time.perf_counter()
        if self._t0 is not None:
            spent = now - self._t0
            self.train_s += spent
            self._iter_s.append(spent)
        self._t0 = now

    def after_val_epoch(self, runner: Any, metrics: Optional[dict] = None) -> None:
        ap = next((float(v) for k, v in (metrics or {}).items() if k.endswith("bbox_mAP")), None)
        self._write({"event": "val", "iteration": runner.iter, "train_s": self.train_s, "AP": ap,
                     "since_start_s": time.perf_counter() - self._start})
        self._t0 = time.perf_counter()  # the evaluation is not training time

    def after_train(self, runner: Any) -> None:
        self._write({"event": "end_training", "iterations": runner.iter, "train_s": self.train_s,
                     "iter_s": self._iter_s, "since_start_s": time.perf_counter() - self._start})

    def _write(self, row: dict) -> None:
        with open(self.out, "a") as f:
            f.write(json.dumps(row) + "\n")
