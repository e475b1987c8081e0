"""The saved model's tensors: the encoder's under `encoder.` + the backbone's own parameter names,
the heads' under `heads.<task>.`, in safetensors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mtexp.io import atomic_save

ENCODER_PREFIX = "encoder."
BACKBONE_PREFIX = "encoder.backbone."


def export_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Model tensors with the encoder's prefixed `encoder.` + the backbone's own parameter names."""
    return {
        name.replace(BACKBONE_PREFIX, ENCODER_PREFIX, 1): tensor.detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
    }


def import_state_dict(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `export_state_dict`: `encoder.` names back under `encoder.backbone.`."""
    return {
        BACKBONE_PREFIX + name[len(ENCODER_PREFIX):] if name.startswith(ENCODER_PREFIX) else name: tensor
        for name, tensor in tensors.items()
    }


def save_weights(path: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    tensors = export_state_dict(model)
    atomic_save(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A saved model's tensors under the model's own parameter names."""
    return import_state_dict(load_file(str(path)))
