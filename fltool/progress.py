"""What long work reports while it runs, and how: the engine, analysis and bench code call a :data:`ProgressFn`
with :class:`ProgressEvent` values; the CLI renders them (bars, stages, notes). Below every other layer, so that
any of them can report without importing another."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class ProgressEvent:
    """One report: a stage begun or advanced, a training or validation iteration, a finished evaluation, a note."""

    kind: str  # "stage" | "train_iter" | "val_iter" | "val_end" | "note" | "sweep_run" | "sweep_run_end"
    message: str = ""
    iteration: int = 0
    max_iters: int = 0
    epoch: int = 0
    values: dict = field(default_factory=dict)


ProgressFn = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """The :data:`ProgressFn` of a caller that does not listen."""
    return None
