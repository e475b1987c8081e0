"""Training progress a person can read: a tqdm bar on a terminal, plain log lines elsewhere.

On a terminal (stdout and stderr both) each epoch gets a tqdm bar. In a log file (CI, Slurm,
`make train > log`) a bar would be one endless line of carriage returns, so progress is logged
instead: a line at the end of each epoch and, within a long epoch, one every
`LINE_INTERVAL_SECONDS`, each with the rate and the time left. `trainer.progress=false` turns
both off, and with them the progress bars of `datasets` (tokenisation, caching).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm.auto import tqdm

log = logging.getLogger("mtexp.progress")
LINE_INTERVAL_SECONDS = 30.0
OFF, BAR, LINES = "off", "bar", "lines"


def progress_mode(enabled: bool, streams: tuple[TextIO, ...] | None = None) -> str:
    """`bar` on a terminal, `lines` when output goes to a file or pipe, `off` when disabled."""
    if not enabled:
        return OFF
    streams = streams if streams is not None else (sys.stdout, sys.stderr)
    return BAR if all(_is_terminal(stream) for stream in streams) else LINES


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


@contextmanager
def library_progress(mode: str) -> Iterator[None]:
    """The progress bars of `datasets` only with a bar on a terminal; as before afterwards."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    were_disabled = are_progress_bars_disabled()
    if mode != BAR and not were_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if mode != BAR and not were_disabled:
            enable_progress_bars()


def clock(seconds: float) -> str:
    """`3725.2` -> `1:02:05`."""
    whole = max(round(seconds), 0)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class Progress:
    """The progress of one training run, epoch by epoch."""

    def __init__(self, mode: str, epochs: int) -> None:
        self.mode = mode
        self.epochs = epochs
        self.started: float | None = None
        self.epochs_done = 0

    def epoch(self, epoch: int, batches: int) -> EpochProgress:
        """Progress through `batches` batches of `epoch` (0-based)."""
        if self.started is None:
            self.started = time.perf_counter()
        return EpochProgress(self, epoch, batches)

    def epoch_ended(self, epoch: int) -> float:
        """Seconds left after `epoch` (0-based), at the mean wall time of the epochs run so far."""
        self.epochs_done += 1
        per_epoch = (time.perf_counter() - (self.started or time.perf_counter())) / self.epochs_done
        return per_epoch * max(self.epochs - epoch - 1, 0)


class EpochProgress:
    """One epoch: `advance(samples)` after each batch, `close()` at the end."""

    def __init__(self, run: Progress, epoch: int, batches: int) -> None:
        self.run = run
        self.epoch = epoch
        self.label = f"epoch {epoch + 1}/{run.epochs}"
        self.total = batches
        self.done = 0
        self.samples = 0
        self.started = time.perf_counter()
        self.last_line = self.started
        self.bar = (tqdm(total=batches, desc=self.label, unit="batch", leave=False)
                    if run.mode == BAR else None)

    def advance(self, samples: int) -> None:
        self.done += 1
        self.samples += samples
        if self.bar is not None:
            self.bar.update(1)
        elif self.run.mode == LINES and self.done < self.total:
            now = time.perf_counter()
            if now - self.last_line >= LINE_INTERVAL_SECONDS:
                self.last_line = now
                left = (self.total - self.done) * (now - self.started) / self.done
                log.info("%s: %d/%d batches (%s), epoch ETA %s", self.label, self.done, self.total,
                         self.rates(now), clock(left))

    def stop(self) -> None:
        """The epoch ends unfinished (the run was interrupted): the bar goes, nothing is reported."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.run.mode == OFF:
            return
        now = time.perf_counter()
        left = self.run.epoch_ended(self.epoch)
        if self.run.mode == LINES:
            log.info("%s: %d/%d batches in %s (%s), ETA %s", self.label, self.done, self.total,
                     clock(now - self.started), self.rates(now), clock(left))

    def rates(self, now: float) -> str:
        seconds = max(now - self.started, 1e-9)
        return f"{self.done / seconds:.2f} batches/s, {self.samples / seconds:.1f} samples/s"
