"""Helpers of tests/test_run_faults.py: snapshots of a run directory, the outputs two runs must
share, a callback that sends a signal at a given step, and a small JointBERT data set."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from mtexp.callbacks import Callback
from mtexp.interrupts import stop_on_termination
from tests.test_data_load import labelled_rows, write_jointbert
from tests.test_train import without_timing


def every_file(run_dir: Path) -> dict[str, tuple[bytes, int, int] | None]:
    """Every file and folder under `run_dir`: a file's bytes, mtime and mode (a folder: None)."""
    found: dict[str, tuple[bytes, int, int] | None] = {}
    for path in sorted(run_dir.rglob("*")):
        info = path.stat()
        found[str(path.relative_to(run_dir))] = (path.read_bytes(), info.st_mtime_ns, info.st_mode) \
            if path.is_file() else None
    return found


def outputs(run_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """metrics.json less its timing fields, history.csv less its seconds, steps.csv."""
    metrics = without_timing(json.loads((run_dir / "metrics.json").read_text()))
    history = pd.read_csv(run_dir / "history.csv").drop(columns="seconds")
    return metrics, history, pd.read_csv(run_dir / "steps.csv")


def assert_same_outputs(run_dir: Path, reference: Path) -> None:
    metrics, history, steps = outputs(run_dir)
    expected = outputs(reference)
    assert metrics == expected[0]
    pd.testing.assert_frame_equal(history, expected[1])
    pd.testing.assert_frame_equal(steps, expected[2])


class SignalAt(Callback):
    """Sends this process `signum` after optimizer step `step`; counts the steps it sees (`seen`)
    and, as state a checkpoint keeps, the steps of the run (`steps`)."""

    def __init__(self, step: int | None, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum, self.steps, self.seen = step, signum, 0, 0

    def on_step_end(self, trainer) -> None:
        self.steps += 1
        self.seen += 1
        if trainer.state.step == self.step:
            os.kill(os.getpid(), self.signum)

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]


@contextmanager
def signals_as_in_mtexp_train() -> Iterator[None]:
    """SIGTERM and SIGINT handled as mtexp-train handles them: a signal the training loop does not
    hold raises `RunInterrupted` here at once (instead of ending pytest)."""
    replaced = stop_on_termination()
    try:
        yield
    finally:
        for signum, handler in replaced.items():
            signal.signal(signum, handler)


def small_jointbert(folder: Path) -> tuple[str, ...]:
    """A JointBERT data set of 24 sentences, intents A and B; the overrides that train on it."""
    rows = labelled_rows({"A": 12, "B": 12})
    root = write_jointbert(folder, {"train": rows, "dev": rows[::4], "test": rows[1::4]})
    return "backbone=tiny", "trainer=quick", "eval.cka_sentences=0", "eval.train_subset=0", \
        "data=snips", f"data.path={root}", "trainer.epochs=1"
