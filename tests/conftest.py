"""Shared fixtures: a tiny random backbone (no download) and the shared real data, when present."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pytest
import torch

from mtexp.encoder import SentenceEncoder

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MTEXP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Feature caches of the tests go to a fresh folder, not the checkout's .cache.
os.environ.setdefault("MTEXP_CACHE", tempfile.mkdtemp(prefix="mtexp-test-cache-"))
torch.set_num_threads(1)


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: object, reason: str) -> None:
    """Skip the calling test when `condition` is false; under CI=true fail instead, so that CI
    never passes by skipping what it was set up to run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test must run)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str) -> ModuleType:
    """`pytest.importorskip`, except that a missing module fails under CI=true."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        require(False, f"{name} is not installed ({error})")
        raise


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (or $MTEXP_SHARED_DATA); skips the test when absent
    (fails under CI=true)."""
    require((SHARED_DATA / "snips").is_dir(),
            f"real data not found at {SHARED_DATA} (set MTEXP_SHARED_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_encoder() -> SentenceEncoder:
    """A randomly initialised 2-layer BERT with the default's vocabulary. Do not train it in place."""
    return SentenceEncoder.random_init(seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_encoder: SentenceEncoder):
    return tiny_encoder.tokenizer


class TrainCLI:
    """`python -m mtexp.train` in a subprocess (offline, one thread), with `base` overrides first."""

    def __init__(self, base: Sequence[str] = ()) -> None:
        self.base = list(base)
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def command(self, run_dir: Path, *overrides: str) -> list[str]:
        return [sys.executable, "-m", "mtexp.train", *self.base, f"hydra.run.dir={run_dir}", *overrides]

    def run(self, run_dir: Path, *overrides: str, check: bool = True,
            timeout: float = 600, **options) -> subprocess.CompletedProcess:
        """Run to the end; with `check` a non-zero exit fails the test with the output's tail."""
        done = subprocess.run(self.command(run_dir, *overrides), cwd=REPO_ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout, **options)
        if check:
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done

    def start(self, run_dir: Path, *overrides: str, **options) -> subprocess.Popen:
        options.setdefault("stdout", subprocess.DEVNULL)
        options.setdefault("stderr", subprocess.DEVNULL)
        return subprocess.Popen(self.command(run_dir, *overrides), cwd=REPO_ROOT, env=self.env, **options)

    @staticmethod
    def wait_for(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 600) -> None:
        """Until `ready()` holds; fails the test when the run ended (or the time ran out) first."""
        deadline = time.monotonic() + timeout
        while not ready() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it was ready"

    def signal_when(self, process: subprocess.Popen, ready: Callable[[], bool],
                    signum: int = signal.SIGKILL, timeout: float = 600) -> int:
        """Send `signum` as soon as `ready()` holds; the exit status."""
        self.wait_for(process, ready, timeout)
        process.send_signal(signum)
        return process.wait(timeout=120)


@pytest.fixture
def train_cli() -> type[TrainCLI]:
    """`train_cli(base_overrides)`: a `TrainCLI` (mtexp-train in a subprocess)."""
    return TrainCLI
