"""Graceful stop on Ctrl-C / SIGTERM: the first signal asks the run to stop after the current step, the second
one interrupts at once (without saving)."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

__all__ = ["StopRequest"]


class StopRequest:
    """Context manager that turns SIGINT and SIGTERM into a ``requested`` flag while it is active.

    Handlers can only be installed from the main thread; elsewhere the context does nothing and Ctrl-C keeps its
    default behaviour (``KeyboardInterrupt``).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested:  # second signal: the user insists
            self._restore()
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()
