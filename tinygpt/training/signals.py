"""Ctrl-C and SIGTERM during training: the first one asks the loop to stop after the current step (it then
saves and exits cleanly); a second one interrupts at once."""
from __future__ import annotations

import signal
import threading
from typing import Any


class StopFlag:
    """Context manager: while inside, the first SIGINT/SIGTERM sets `signal` ("SIGINT" / "SIGTERM") instead of
    interrupting; the previous handlers come back on exit. Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # second signal: give up at once
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


__all__ = ["StopFlag"]
