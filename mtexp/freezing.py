"""Task 3: which parts of a multi-task model train, per freezing scenario and epoch."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

FREEZING_NAMES = ("none", "all", "backbone", "one_head", "gradual", "partial")
EMBEDDINGS = "encoder.embeddings"
ENCODER_OTHER = "encoder.other"
OTHER = "other"


@dataclass
class FreezingConfig:
    """The `freezing` config node.

    `head` names the frozen head for `one_head`: a task name, or "A" / "B" for the first
    sequence / first token task. `k` is the number of bottom layers frozen (with the
    embeddings) for `partial`; `unfreeze_every` is the thaw interval in epochs for `gradual`.
    """

    name: str = "none"
    head: str | None = None
    k: int = 0
    unfreeze_every: int = 1
    frozen_modules_eval: bool = True

    def __post_init__(self) -> None:
        if self.name not in FREEZING_NAMES:
            raise ValueError(f"freezing.name must be one of {list(FREEZING_NAMES)}, got {self.name!r}")
        if self.name == "one_head" and not self.head:
            raise ValueError("freezing.head must name a task (or A / B) when freezing.name=one_head")
        if self.k < 0:
            raise ValueError(f"freezing.k must be >= 0, got {self.k}")
        if self.unfreeze_every < 1:
            raise ValueError(f"freezing.unfreeze_every must be >= 1, got {self.unfreeze_every}")


@dataclass
class FreezeState:
    """What `apply_freezing` left trainable."""

    trainable: set[str] = field(default_factory=set)
    frozen: set[str] = field(default_factory=set)
    params_trainable: int = 0
    params_total: int = 0


def layer_part(index: int) -> str:
    return f"encoder.layer_{index}"


def head_part(task: str) -> str:
    return f"heads.{task}"


def parameter_parts(model: nn.Module) -> dict[str, str]:
    """Map every parameter name of `model` to its part (`heads.<task>`, `encoder.layer_<i>`, ...)."""
    owner: dict[int, str] = {}
    encoder = getattr(model, "encoder", None)
    if encoder is not None:
        for param in encoder.parameters():
            owner[id(param)] = ENCODER_OTHER
        for param in encoder.embeddings.parameters():
            owner[id(param)] = EMBEDDINGS
        for index, layer in enumerate(encoder.layers):
            for param in layer.parameters():
                owner[id(param)] = layer_part(index)
    for task, head in getattr(model, "heads", {}).items():
        for param in head.parameters():
            owner[id(param)] = head_part(task)
    return {name: owner.get(id(param), OTHER) for name, param in model.named_parameters()}


def resolve_head(model: nn.Module, head: str) -> str:
    """A task name from a task name or "A" (first sequence task) / "B" (first token task)."""
    tasks = getattr(model, "tasks", {})
    if head in tasks:
        return head
    kinds = {"A": "sequence", "B": "token"}
    if head in kinds:
        for name, task in tasks.items():
            if task.kind == kinds[head]:
                return name
        raise ValueError(f"freezing.head={head} but the model has no {kinds[head]} task")
    raise ValueError(f"freezing.head={head!r} is not a task: tasks are {sorted(tasks)} (or A / B)")


def _num_layers(model: nn.Module) -> int:
    encoder = getattr(model, "encoder", None)
    return len(encoder.layers) if encoder is not None else 0


def gradual_encoder_parts(num_layers: int, thawed: int) -> set[str]:
    """Encoder parts thawed after `thawed` steps: top layers first (with encoder.other), embeddings last."""
    parts = {layer_part(i) for i in range(max(num_layers - thawed, 0), num_layers)}
    if thawed >= 1:
        parts.add(ENCODER_OTHER)
    if thawed > num_layers:
        parts.add(EMBEDDINGS)
    return parts


def trainable_parts(model: nn.Module, cfg: FreezingConfig, epoch: int = 0) -> set[str]:
    """The parts of `model` that train under `cfg` at `epoch` (0-based)."""
    parts = set(parameter_parts(model).values())
    heads = {part for part in parts if part.startswith("heads.")}
    num_layers = _num_layers(model)
    if cfg.name == "none":
        chosen = parts
    elif cfg.name == "all":
        chosen = set()
    elif cfg.name == "backbone":
        chosen = heads
    elif cfg.name == "one_head":
        chosen = parts - {head_part(resolve_head(model, cfg.head))}
    elif cfg.name == "gradual":
        thawed = max(epoch, 0) // cfg.unfreeze_every
        chosen = heads | gradual_encoder_parts(num_layers, thawed)
    else:  # partial
        if cfg.k > num_layers:
            raise ValueError(f"freezing.k={cfg.k} but the encoder has only {num_layers} layers")
        chosen = parts - {EMBEDDINGS} - {layer_part(i) for i in range(cfg.k)}
    return chosen & parts


def apply_freezing(model: nn.Module, cfg: FreezingConfig, epoch: int = 0) -> FreezeState:
    """Set `requires_grad` on every parameter per `cfg` at `epoch`; return what trains."""
    parts = parameter_parts(model)
    chosen = trainable_parts(model, cfg, epoch)
    state = FreezeState(trainable=set(chosen), frozen=set(parts.values()) - chosen)
    for name, param in model.named_parameters():
        param.requires_grad_(parts[name] in chosen)
        state.params_total += param.numel()
        if param.requires_grad:
            state.params_trainable += param.numel()
    return state


def _fully_frozen(module: nn.Module) -> bool:
    return not any(param.requires_grad for param in module.parameters())


def set_frozen_modules_eval(model: nn.Module, cfg: FreezingConfig | None = None) -> list[str]:
    """Call after `model.train()`: put fully frozen parts in eval mode (dropout off).

    Returns the parts switched; does nothing when `cfg.frozen_modules_eval` is false.
    """
    if cfg is not None and not cfg.frozen_modules_eval:
        return []
    switched = []
    encoder = getattr(model, "encoder", None)
    if encoder is not None:
        modules = {EMBEDDINGS: encoder.embeddings}
        modules.update({layer_part(i): layer for i, layer in enumerate(encoder.layers)})
        if _fully_frozen(encoder):
            modules = {"encoder": encoder}  # also covers dropout outside layers and embeddings
        for part, module in modules.items():
            if _fully_frozen(module):
                module.eval()
                switched.append(part)
    for task, head in getattr(model, "heads", {}).items():
        if _fully_frozen(head):
            head.eval()
            switched.append(head_part(task))
    return switched


def encoder_frozen_throughout(cfg: FreezingConfig) -> bool:
    """True when no encoder parameter ever trains, so its outputs can be cached."""
    return cfg.name in ("all", "backbone")


def nothing_trains(cfg: FreezingConfig) -> bool:
    """True when no parameter trains at all: the run only evaluates the model as it is."""
    return cfg.name == "all"
