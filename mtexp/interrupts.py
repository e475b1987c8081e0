"""Termination signals: SIGTERM (what Slurm sends before a preemption) and SIGINT.

Outside the training loop they raise `RunInterrupted` at once (`stop_on_termination`, which
`mtexp-train` installs). Inside it they are held (`HeldSignals`): the loop looks at its step
boundaries, writes a checkpoint at the step it stopped at, and only then stops. A signal never
cuts a step or a checkpoint in half, and the requeued run continues from that very step.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any, NoReturn

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM (or another termination signal) arrived; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the recording short
    raise RunInterrupted(signum)


def stop_on_termination() -> dict[int, Any]:
    """SIGTERM and SIGINT raise `RunInterrupted` in the main thread (SIGINT too where the process
    started with it ignored, as background jobs do); returns the handlers it replaced."""
    return {signum: signal.signal(signum, _raise_interrupted) for signum in SIGNALS}


class HeldSignals:
    """Inside the block SIGTERM and SIGINT are noted, not acted on: `pending` is the first that
    came (None while none has). `deliver()` acts on it: the handlers in place before the block
    come back and the signal goes to its handler (mtexp-train's raises `RunInterrupted`); where it
    had no Python handler (SIGTERM's default ends the process unrecorded) `RunInterrupted` is
    raised. A signal that was ignored stays ignored; outside the main thread nothing is held."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> HeldSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                handler = signal.getsignal(signum)
                if handler is not None and handler is not signal.SIG_IGN:
                    self.previous[signum] = signal.signal(signum, self._hold)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is None:
            self.pending = signum

    def _restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def deliver(self, signum: int | None = None) -> NoReturn:
        """Act on `signum` (by default the pending one): see the class."""
        signum = signum or self.pending or signal.SIGTERM
        handler = self.previous.get(signum)
        self._restore()
        if callable(handler):
            handler(signum, None)
        raise RunInterrupted(signum)
