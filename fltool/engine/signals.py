"""Ctrl-C and SIGTERM during training: the first asks the run to stop after the current iteration (it saves a
checkpoint and exits 128 + signal, see ``fltool_plugins.hooks.StopRequestHook``); a second one kills at once."""
from __future__ import annotations

import signal
import threading
from typing import Any


class StopFlag:
    """Set by SIGINT/SIGTERM; a second signal restores the default handler so it kills at once."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict = {}

    def __call__(self) -> int:
        return self.signum

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        from fltool.engine.compat import repair_signal_stack

        repair_signal_stack()  # compat item 8: OpenVINO, earlier in this process, may have left a freed one
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
