"""fltool's exceptions.

Engine, data and analysis code raise these; the CLI turns each into one line on stderr and exit code 1
(see ``fltool.cli.common.handle_errors``). A message names the bad thing; ``hint`` says what to do about it.
"""
from __future__ import annotations


class FltoolError(Exception):
    """A problem with the user's input or environment that the user can fix."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(". ")
        if self.hint:
            text += f"; {self.hint.rstrip('. ')}"
        return " ".join(text.split())  # one line, whatever the parts contained


class ConfigError(FltoolError):
    """A config file, key, value or registry type is wrong."""


class DataError(FltoolError):
    """A dataset file, image or annotation is missing or malformed."""


class CheckpointError(FltoolError):
    """A checkpoint is missing, foreign, incomplete or not trusted."""


class StackError(FltoolError):
    """The installed software stack (torch/mmcv/mmdet/...) is broken."""


class TrainingError(FltoolError):
    """Training had to stop (e.g. a non-finite loss)."""


class Interrupted(FltoolError):
    """Training was stopped by a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int, hint: str | None = None):
        super().__init__(message, hint)
        self.exit_code = 128 + signum
