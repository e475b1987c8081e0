"""Task 4: AdamW parameter groups with per-part learning rates, and step-wise LR schedules."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from mtexp.parts import Part
from mtexp.tasks import HEAD_ALIASES, resolve_head

if TYPE_CHECKING:
    from mtexp.model import MultiTaskModel

NO_DECAY_SUFFIX = ".no_decay"
NORM_TYPES: tuple[type[nn.Module], ...] = tuple(
    getattr(nn, name) for name in ("LayerNorm", "GroupNorm", "RMSNorm") if hasattr(nn, name)
)
SCHEDULE_NAMES = ("constant", "linear", "cosine", "slanted_triangular")


def _check_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{key} must be > 0, got {value}")


@dataclass
class OptimConfig:
    """The `optim` config node: AdamW with separate encoder / head learning rates.

    `lr` is only a convenience for presets that interpolate it into `lr_encoder` / `lr_head`.
    `lr_heads` overrides `lr_head` per task (a task name, or "A" / "B" for the first
    sequence / token task). Layer l of L (1-based from the bottom) gets
    `lr_encoder * layer_decay ** (L - l)`, the embeddings `layer_decay ** L`.
    """

    name: str = "adamw"
    lr: float | None = None
    lr_encoder: float = 1e-4
    lr_head: float = 1e-4
    lr_heads: dict[str, float] = field(default_factory=dict)
    layer_decay: float = 1.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        self.betas = tuple(float(beta) for beta in self.betas)
        self.lr_heads = dict(self.lr_heads or {})
        if self.lr is not None:
            _check_positive("optim.lr", self.lr)
        _check_positive("optim.lr_encoder", self.lr_encoder)
        _check_positive("optim.lr_head", self.lr_head)
        for task, value in self.lr_heads.items():
            _check_positive(f"optim.lr_heads.{task}", value)
        _check_positive("optim.layer_decay", self.layer_decay)
        _check_positive("optim.eps", self.eps)
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")


def part_learning_rates(model: MultiTaskModel, cfg: OptimConfig) -> dict[Part, float]:
    """The learning rate of every part of `model` (see `MultiTaskModel.parameter_parts`)."""
    head_lrs = _head_overrides(model, cfg)
    num_layers = len(model.encoder.layers)
    rates = {}
    for part in set(model.parameter_parts().values()):
        if part.kind == "head":
            rates[part] = head_lrs.get(part.task, cfg.lr_head)
        elif part.kind == "embeddings":
            rates[part] = cfg.lr_encoder * cfg.layer_decay**num_layers
        elif part.kind == "layer":
            rates[part] = cfg.lr_encoder * cfg.layer_decay ** (num_layers - (part.layer + 1))
        else:
            rates[part] = cfg.lr_encoder
    return rates


def _head_overrides(model: MultiTaskModel, cfg: OptimConfig) -> dict[str, float]:
    kinds = {name: task.kind for name, task in model.tasks.items()}
    overrides = {}
    for key, value in cfg.lr_heads.items():
        task = resolve_head(key, kinds)
        if task is not None:
            overrides[task] = float(value)
        elif key not in HEAD_ALIASES:  # an alias with no task of its kind here: nothing to override
            raise ValueError(f"optim.lr_heads.{key}: no such task, tasks are {sorted(kinds)}")
    return overrides


def is_norm_layer(module: nn.Module) -> bool:
    """A normalisation layer (LayerNorm, GroupNorm, RMSNorm, or a backbone's own *LayerNorm)."""
    return isinstance(module, NORM_TYPES) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def no_decay_names(model: nn.Module) -> set[str]:
    """Parameters exempt from weight decay: biases and normalisation-layer weights."""
    names = set()
    for module_name, module in model.named_modules():
        is_norm = is_norm_layer(module)
        for param_name, _ in module.named_parameters(recurse=False):
            if is_norm or param_name == "bias":
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def _param_groups(model: MultiTaskModel, cfg: OptimConfig,
                  keep: Iterable[tuple[str, nn.Parameter]]) -> list[dict]:
    parts = model.parameter_parts()
    rates = part_learning_rates(model, cfg)
    exempt = no_decay_names(model)
    groups: dict[str, dict] = {}
    for name, param in keep:
        part = parts[name]
        decay = name not in exempt
        group_name = part.name if decay else part.name + NO_DECAY_SUFFIX
        if group_name not in groups:
            groups[group_name] = {
                "params": [],
                "name": group_name,
                "base_lr": rates[part],
                "lr": rates[part],
                "weight_decay": cfg.weight_decay if decay else 0.0,
            }
        groups[group_name]["params"].append(param)
    return list(groups.values())


def build_optimizer(
    model: MultiTaskModel, cfg: OptimConfig, trainable_only: bool = True
) -> torch.optim.AdamW:
    """AdamW with one group per part (and a `.no_decay` twin), each with `name` and `base_lr`.

    With `trainable_only=False` frozen parameters are included too; AdamW skips parameters
    whose `.grad` is None, so zero gradients with `set_to_none=True` (the default).
    """
    keep = [(n, p) for n, p in model.named_parameters() if p.requires_grad or not trainable_only]
    if not keep:
        raise ValueError("no trainable parameters: a scenario that trains nothing has no optimizer")
    groups = _param_groups(model, cfg, keep)
    return torch.optim.AdamW(groups, lr=cfg.lr_head, betas=cfg.betas, eps=cfg.eps, fused=_can_fuse(keep))


def _can_fuse(named: Iterable[tuple[str, nn.Parameter]]) -> bool:
    """The fused AdamW kernel (several times faster per step) takes float tensors on CPU or CUDA."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for _, p in named)


def current_multiplier(optimizer: torch.optim.Optimizer) -> float:
    """The schedule multiplier now in force, read from any group with a positive base_lr."""
    for group in optimizer.param_groups:
        if group.get("base_lr", 0) > 0:
            return group["lr"] / group["base_lr"]
    return 1.0


def add_thawed_params(
    optimizer: torch.optim.Optimizer,
    model: MultiTaskModel,
    cfg: OptimConfig,
    multiplier: float | None = None,
) -> list[str]:
    """Add groups for trainable parameters not yet in `optimizer`; return their names.

    Their lr is `base_lr * multiplier`, the multiplier defaulting to the one now in force.
    """
    present = {id(param) for group in optimizer.param_groups for param in group["params"]}
    new = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in present]
    if not new:
        return []
    factor = current_multiplier(optimizer) if multiplier is None else multiplier
    added = []
    for group in _param_groups(model, cfg, new):
        group["lr"] = group["base_lr"] * factor
        optimizer.add_param_group(group)
        added.append(group["name"])
    return added


def group_learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """`{part: lr}`, decay and no-decay twins merged (they share the lr)."""
    rates: dict[str, float] = {}
    for index, group in enumerate(optimizer.param_groups):
        name = str(group.get("name", f"group_{index}")).removesuffix(NO_DECAY_SUFFIX)
        rates.setdefault(name, float(group["lr"]))
    return rates


@dataclass
class ScheduleConfig:
    """The `schedule` config node.

    `warmup_ratio` is the fraction of steps spent warming up linearly from 0 (all but
    slanted_triangular); decaying schedules end at `min_lr_ratio`. Slanted triangular
    (Howard & Ruder 2018) rises for `cut_frac` of the steps from 1/`ratio` to 1, then falls
    back to 1/`ratio`.
    """

    name: str = "linear"
    warmup_ratio: float = 0.0
    cut_frac: float = 0.1
    ratio: float = 32.0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in SCHEDULE_NAMES:
            raise ValueError(f"schedule.name must be one of {list(SCHEDULE_NAMES)}, got {self.name!r}")
        for key in ("warmup_ratio", "min_lr_ratio"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"schedule.{key} must be in [0, 1], got {getattr(self, key)}")
        if not 0 < self.cut_frac < 1:
            raise ValueError(f"schedule.cut_frac must be in (0, 1), got {self.cut_frac}")
        if self.ratio < 1:
            raise ValueError(f"schedule.ratio must be >= 1, got {self.ratio}")


class LRSchedule:
    """Sets every group's lr to `group["base_lr"] * multiplier(step)`, groups added later included.

    Call `step()` after each `optimizer.step()`; the lr for optimizer step t is multiplier(t).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.optimizer = optimizer
        self.cfg = cfg
        self.total_steps = int(total_steps)
        self.warmup_steps = math.ceil(cfg.warmup_ratio * self.total_steps)
        self.step_count = 0
        self._apply()

    def multiplier(self, step: int) -> float:
        cfg, total = self.cfg, self.total_steps
        step = min(max(step, 0), total)
        if cfg.name == "slanted_triangular":
            return slanted_triangular(step, total, cfg.cut_frac, cfg.ratio)
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if cfg.name == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(total - self.warmup_steps, 1)
        shape = 1.0 - progress if cfg.name == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _apply(self) -> None:
        factor = self.multiplier(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * factor

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps, "name": self.cfg.name}

    def load_state_dict(self, state: Mapping) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


def slanted_triangular(step: int, total: int, cut_frac: float, ratio: float) -> float:
    """Howard & Ruder (2018), eq. 3, as a multiplier of the peak learning rate."""
    cut = max(math.floor(total * cut_frac), 1)
    falling = max(1.0 - (step - cut) / (cut * (1.0 / cut_frac - 1.0)), 0.0)
    p = step / cut if step < cut else falling
    return (1.0 + p * (ratio - 1.0)) / ratio
