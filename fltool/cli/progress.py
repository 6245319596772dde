"""Rendering the engine's progress events: a live rich display on a terminal, plain log lines otherwise."""
from __future__ import annotations

import os
import time
from typing import Any, Optional

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fltool.engine.metrics import METRIC_KEYS
from fltool.progress import ProgressEvent

LOSS_ORDER = ("loss", "loss_cls", "loss_bbox")


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _train_info(values: dict, epoch: int = 0) -> str:
    parts = [f"epoch {epoch}"] if epoch else []
    parts += [f"{k} {values[k]:.4f}" for k in LOSS_ORDER if k in values]
    parts += [f"{k} {v:.4f}" for k, v in values.items() if k.startswith("loss") and k not in LOSS_ORDER]
    if "lr" in values:
        parts.append(f"lr {values['lr']:.2e}")
    if "num_pos" in values:
        parts.append(f"pos/img {values['num_pos']:.1f}")
    if "time" in values:
        parts.append(f"{values['time']:.2f} s/it")
    return "  ".join(parts)


def metrics_line(metrics: dict) -> str:
    return "  ".join(f"{k} {metrics[k]:.3f}" for k in METRIC_KEYS if k in metrics and metrics[k] is not None)


class ProgressDisplay:
    """Callable progress sink for the engine. Use as a context manager."""

    def __init__(self, console: Console, log_every: int = 20, plain: Optional[bool] = None) -> None:
        self.console = console
        self.plain = (not console.is_terminal) if plain is None else plain
        # In a distributed run only rank 0 reports progress (every rank would print the same lines).
        self.silent = int(os.environ.get("RANK", "0")) != 0
        self.log_every = log_every
        self.progress: Optional[Progress] = None
        self.train_task: Any = None
        self.val_task: Any = None
        self.stage_task: Any = None
        self._last_stage = ""
        self._t0 = time.time()
        self._train_start: Optional[tuple] = None  # (time, iteration) of the first reported iteration

    def __enter__(self) -> "ProgressDisplay":
        if not self.plain and not self.silent:
            self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                     console=self.console, transient=False)
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _log(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)
        else:
            self.console.print(f"[{time.time() - self._t0:7.1f}s] {text}", highlight=False, soft_wrap=True)

    def __call__(self, event: ProgressEvent) -> None:
        if self.silent:
            return
        if event.kind == "stage":
            if event.max_iters and self.progress is not None:  # a stage with a count: a bar of its own
                if self.stage_task is None or event.message != self._last_stage:
                    self.stage_task = self.progress.add_task(event.message, total=event.max_iters, info="")
                self.progress.update(self.stage_task, completed=event.iteration)
            elif event.message != self._last_stage:
                self._log(f"• {event.message}")
            elif event.max_iters and event.iteration == event.max_iters:
                self._log(f"• {event.message}: {event.iteration}/{event.max_iters}")
            self._last_stage = event.message
        elif event.kind == "train_iter":
            info = _train_info(event.values, event.epoch)
            if self.progress is not None:
                if self.train_task is None:
                    self.train_task = self.progress.add_task("train", total=event.max_iters,
                                                             completed=event.iteration - 1, info="")
                self.progress.update(self.train_task, completed=event.iteration, info=info)
            elif (event.iteration % self.log_every == 0 or event.iteration == event.max_iters
                  or self._train_start is None):  # the first iteration this process ran (1, or where it resumed)
                now = time.time()
                if self._train_start is None:
                    self._train_start = (now, event.iteration)
                start_time, start_iter = self._train_start
                done = event.iteration - start_iter
                eta = f"  eta {_eta((now - start_time) / done * (event.max_iters - event.iteration))}" if done else ""
                self._log(f"iter {event.iteration}/{event.max_iters}  {info}{eta}")
        elif event.kind == "val_iter":
            if self.progress is not None:
                if self.val_task is None or self.progress.tasks[self.val_task].finished:
                    self.val_task = self.progress.add_task("eval", total=event.max_iters, info="")
                self.progress.update(self.val_task, completed=event.iteration)
            elif event.iteration == event.max_iters:
                self._log(f"eval {event.iteration}/{event.max_iters} batches")
        elif event.kind == "val_end":
            when = f" at iteration {event.iteration}" if event.iteration else ""
            self._log(f"evaluation{when}: {metrics_line(event.values) or 'no detections'}")
        elif event.kind == "note":
            self._log(event.message)
