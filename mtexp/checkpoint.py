"""What checkpoints hold (RNG state) and the final model's tensors in safetensors.

Where checkpoints live and how they are written and read is `mtexp.rundir`'s business.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from mtexp.io import atomic_save
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


def export_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Model tensors with the encoder's prefixed `encoder.` + the backbone's own parameter names."""
    exported = {}
    for name, tensor in model.state_dict().items():
        exported[name.replace("encoder.backbone.", "encoder.", 1)] = tensor.detach().cpu().contiguous()
    return exported


def save_model(path: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    tensors = export_state_dict(model)
    atomic_save(path, lambda temp: save_file(tensors, temp, metadata=metadata))
