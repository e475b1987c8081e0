"""Low-rank adapters (LoRA) for the `lora` freezing scenario, through the `peft` library.

The adapters are injected into the encoder's backbone in place (`peft.inject_adapter_in_model`):
each adapted projection becomes a peft layer that holds the original one (`base_layer`) and the
adapter's `lora_A` / `lora_B`, inside the encoder layer it belongs to, so the adapter parameters
fall in that layer's part (`MultiTaskModel.parameter_parts`) and take its learning rate. Training
over, `save_and_merge_adapters` writes the unmerged adapters in peft's format (`adapter/` in the
run directory: `adapter_config.json`, `adapter_model.safetensors`, which
`peft.PeftModel.from_pretrained` loads onto the base backbone) and then merges them into the base
weights, leaving a plain backbone with its own parameter names: the model that is evaluated,
measured and saved.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from mtexp.io import atomic_save_folder
from mtexp.rundir import ADAPTER_DIR

if TYPE_CHECKING:
    from mtexp.freezing import FreezingConfig
    from mtexp.model import MultiTaskModel

ADAPTER_NAME = "default"  # peft's name for a model's only adapter
ADAPTER_LAYERS = ("lora_A", "lora_B")  # the modules that hold an adapter's parameters
# What `PeftModel.save_pretrained` puts before the backbone's own names in adapter_model.safetensors.
PEFT_PREFIX = "base_model.model."
# A layer's linear modules under one of these names are attention; the others are feed-forward.
ATTENTION_NAMES = frozenset({"attention", "attn", "self_attn", "self_attention"})


def is_adapter_parameter(name: str) -> bool:
    """Whether the parameter `name` belongs to a LoRA adapter (`...lora_A.default.weight`)."""
    return any(f".{layer}." in f".{name}" for layer in ADAPTER_LAYERS)


def has_adapters(module: nn.Module) -> bool:
    return any(is_adapter_parameter(name) for name, _ in module.named_parameters())


def add_adapters(model: MultiTaskModel, cfg: FreezingConfig) -> None:
    """Inject LoRA adapters, as `cfg` (the `freezing` node) sets them, into the encoder's backbone."""
    from peft import LoraConfig, inject_adapter_in_model

    backbone = model.encoder.backbone
    targets = list(cfg.target_modules)
    check_targets(backbone, targets)
    if cfg.feed_forward:
        extra = feed_forward_modules(backbone, model.encoder.layers)
        targets += [name for name in extra if name not in targets]
    config = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, bias="none",
        base_model_name_or_path=base_model_name(backbone),
    )
    inject_adapter_in_model(config, backbone, adapter_name=ADAPTER_NAME)


def check_targets(backbone: nn.Module, targets: Sequence[str]) -> None:
    """Every target must name a linear module of the backbone, as peft matches names: the full
    name or its last dotted components."""
    linear = [name for name, module in backbone.named_modules() if isinstance(module, nn.Linear)]
    for target in targets:
        if not any(name == target or name.endswith(f".{target}") for name in linear):
            examples = sorted({name.rpartition(".")[2] for name in linear})
            raise ValueError(
                f"freezing.target_modules: {target!r} names no linear module of the backbone "
                f"(its linear modules end in {examples})"
            )


def feed_forward_modules(backbone: nn.Module, layers: Sequence[nn.Module]) -> list[str]:
    """The full names of each encoder layer's linear modules outside its attention block."""
    names = {id(module): name for name, module in backbone.named_modules()}
    found = []
    for layer in layers:
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear) and not ATTENTION_NAMES & set(name.split(".")):
                found.append(f"{names[id(layer)]}.{name}")
    return found


def base_model_name(backbone: nn.Module) -> str | None:
    """The backbone's name for adapter_config.json: the hub name of the bundled default rather
    than the folder it was loaded from."""
    from mtexp.backbones import DEFAULT_BACKBONE, BundledModelError, bundled_model_path

    name = getattr(getattr(backbone, "config", None), "name_or_path", None) or None
    try:
        bundled = name is not None and Path(name).resolve() == bundled_model_path()
    except BundledModelError:
        bundled = False
    return DEFAULT_BACKBONE if bundled else name


def save_and_merge_adapters(model: MultiTaskModel, run_dir: Path | None) -> None:
    """Write the adapters to `run_dir/adapter/` (unless `run_dir` is None), then merge them into
    the backbone. Does nothing to a model without adapters."""
    backbone = model.encoder.backbone
    if not hasattr(backbone, "peft_config"):
        return
    if run_dir is not None:
        save_adapters(backbone, Path(run_dir) / ADAPTER_DIR)
    merge_adapters(backbone)


def save_adapters(backbone: nn.Module, folder: Path) -> None:
    """The unmerged adapters in peft's format: adapter_config.json and adapter_model.safetensors."""
    from peft import get_peft_model_state_dict
    from peft.utils.constants import SAFETENSORS_WEIGHTS_NAME
    from safetensors.torch import save_file

    config = copy.copy(backbone.peft_config[ADAPTER_NAME])
    config.target_modules = sorted(config.target_modules)  # a set in peft: a stable order on disk
    state = get_peft_model_state_dict(backbone, adapter_name=ADAPTER_NAME)
    tensors = {PEFT_PREFIX + name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}

    def write(temp: Path) -> None:
        config.save_pretrained(str(temp))
        save_file(tensors, str(temp / SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})

    atomic_save_folder(folder, write)


def merge_adapters(backbone: nn.Module) -> None:
    """Fold every adapter into its base weight and put the base layer back in its place, so that
    the backbone has its original modules and parameter names again."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(backbone.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)
            parent, _, child = name.rpartition(".")
            setattr(backbone.get_submodule(parent), child, module.get_base_layer())
    if hasattr(backbone, "peft_config"):
        del backbone.peft_config
