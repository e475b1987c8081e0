"""Training progress: plain lines with rate and ETA in a log file, a tqdm bar on a terminal,
nothing with trainer.progress=false; each epoch's plan logged once."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from pathlib import Path

import pytest
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from mtexp import progress
from mtexp.progress import BAR, LINES, OFF, Progress, clock, library_progress, progress_mode

REPO = Path(__file__).resolve().parents[1]
TINY = ("backbone=tiny", "data.size=400", "trainer=quick", "eval.cka_sentences=16", "eval.train_subset=0")
EPOCH_END = re.compile(r"epoch (\d+)/2: (\d+)/\2 batches in \d+:\d\d:\d\d "
                       r"\([\d.]+ batches/s, [\d.]+ samples/s\), ETA \d+:\d\d:\d\d$")
EPOCH_PLAN = re.compile(r"epoch (\d+): \d+ steps \(proportional\)")


def train_command(tmp_path: Path, *overrides: str) -> list[str]:
    """A tiny run that tokenises afresh (its own feature cache), so that tokenisation shows too."""
    return [sys.executable, "-m", "mtexp.train", *TINY, f"data.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'run'}", *overrides]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_a_log_file_gets_one_line_per_epoch_with_rate_and_eta(tmp_path):
    log_file = tmp_path / "train.out"
    with log_file.open("wb") as out:
        done = subprocess.run(train_command(tmp_path, "trainer.progress=true"), cwd=REPO, env=environment(),
                              stdout=out, stderr=subprocess.STDOUT, timeout=600)
    text = log_file.read_bytes().decode()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text
    assert "feature cache written" in text  # tokenisation ran, without its progress bars
    lines = text.splitlines()
    ends = [m for m in (EPOCH_END.search(line) for line in lines) if m]
    assert [m.group(1) for m in ends] == ["1", "2"]
    assert all("batches/s" in line and "ETA" in line for line in lines if "mtexp.progress" in line)
    plans = Counter(m.group(1) for m in (EPOCH_PLAN.search(line) for line in lines) if m)
    assert plans == {"0": 1, "1": 1}


def on_terminal(command: list[str], timeout: float = 600) -> str:
    """Run `command` with stdout and stderr on a pseudo-terminal; what it wrote there."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # rows, columns
    process = subprocess.Popen(command, cwd=REPO, env=environment(), stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower)
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(leader)
        process.kill() if process.poll() is None else None
        process.wait()
    assert process.returncode == 0, output[-3000:].decode(errors="replace")
    return output.decode(errors="replace")


@pytest.mark.slow
def test_a_terminal_gets_bars_unless_progress_is_off(tmp_path):
    shown = on_terminal(train_command(tmp_path / "on", "trainer.progress=true"))
    assert "\r" in shown and "batch/s" in shown and "tokenise builtin/train" in shown
    assert not EPOCH_END.search(shown.replace("\r\n", "\n"))
    quiet = on_terminal(train_command(tmp_path / "off", "trainer.progress=false"))
    assert "\r" not in quiet.replace("\r\n", "\n")
    assert "tokenise" not in quiet and "batch/s" not in quiet and "batches/s" not in quiet


def test_progress_mode_follows_the_streams():
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert progress_mode(True, (terminal, terminal)) == BAR
        assert progress_mode(True, (terminal, io.StringIO())) == LINES
        assert progress_mode(False, (terminal, terminal)) == OFF
    os.close(leader)


@pytest.mark.parametrize(("mode", "disabled"), [(OFF, True), (LINES, True), (BAR, False)])
def test_library_progress_bars_only_with_a_bar(mode, disabled):
    before = are_progress_bars_disabled()
    enable_progress_bars()  # as in a fresh process: the bars of `datasets` are on
    try:
        with library_progress(mode):
            assert are_progress_bars_disabled() is disabled
        assert not are_progress_bars_disabled()
    finally:
        if before:
            disable_progress_bars()


def test_lines_within_a_long_epoch(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LINE_INTERVAL_SECONDS", 0.0)  # every batch counts as long
    caplog.set_level(logging.INFO, logger="mtexp.progress")
    epoch = Progress(LINES, epochs=3).epoch(1, batches=4)
    for _ in range(4):
        epoch.advance(samples=8)
    epoch.close()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 4
    assert all(re.search(r"epoch 2/3: [1-3]/4 batches \(.* batches/s, .* samples/s\), epoch ETA", m)
               for m in messages[:3])
    assert re.search(r"epoch 2/3: 4/4 batches in .* samples/s\), ETA \d+:\d\d:\d\d$", messages[3])


def test_nothing_when_off(caplog):
    caplog.set_level(logging.INFO, logger="mtexp.progress")
    epoch = Progress(OFF, epochs=1).epoch(0, batches=2)
    epoch.advance(4)
    epoch.close()
    assert not caplog.records


def test_clock():
    assert clock(3725.2) == "1:02:05" and clock(0) == "0:00:00" and clock(-3) == "0:00:00"
