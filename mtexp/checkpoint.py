"""What checkpoints hold besides the model: the RNG state.

Where checkpoints live and how they are written and read is `mtexp.rundir`'s business.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtexp.rundir import LAST, RunDir


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(run_dir: Path, name: str = LAST) -> dict[str, Any] | None:
    """The checkpoint `name` of the run directory `run_dir`; None when it has none."""
    return RunDir(run_dir).read_checkpoint(name)
