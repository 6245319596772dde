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


def from_os_error(exc: OSError) -> FltoolError:
    """An operating-system fault (a full disk, a read-only folder, a missing file) as one line naming the file and
    what to do, for the commands' error convention (``fltool: error: what; what to do``)."""
    import errno

    where = exc.filename if exc.filename is not None else "a file"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "free disk space (or write to another disk), then run the command again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a folder you can write to (--work-dir, --out-dir) or fix the permissions"
    elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
        hint = "check the path"
    else:
        hint = "check the path, its permissions and the free disk space"
    return FltoolError(f"cannot use {where}: {reason}", hint)
