"""Task 3: the `freezing` config node, and setting what trains per scenario and epoch.

The scenarios themselves (which parts train when) are classes in `mtexp.scenarios`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from mtexp.parts import EMBEDDINGS, Part
from mtexp.scenarios import SCENARIOS, Scenario, scenario_names

if TYPE_CHECKING:
    from mtexp.model import MultiTaskModel


@dataclass
class FreezingConfig:
    """The `freezing` config node.

    `name` is a registered scenario (`mtexp.scenarios`). `head` names the frozen head of a
    frozen-head scenario: a task name, or "A" / "B" for the first sequence / first token task.
    `k` is the number of bottom layers frozen (with the embeddings) for `partial`;
    `unfreeze_every` is the thaw interval in epochs for `gradual`, `thaw_epochs` the epochs over
    which it spreads its thaw steps (null: the run's budget; 0: one step every `unfreeze_every`
    epochs whatever the budget). `after_epochs` is the number of epochs a frozen-head scenario
    trains every part before it freezes the head (0: frozen from the start). `layer_norm` also trains the
    encoder's LayerNorm weights under `bitfit`. For `lora`: the adapters' `rank`, scale `alpha`
    (the update is `alpha / rank * B A`), `dropout` on their input, `target_modules` (module
    names of the backbone, matched as peft matches them: the name or its last dotted
    components), and `feed_forward` to adapt every layer's feed-forward projections too.
    """

    name: str = "none"
    head: str | None = None
    k: int = 0
    unfreeze_every: int = 1
    frozen_modules_eval: bool = True
    layer_norm: bool = False
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    feed_forward: bool = False
    thaw_epochs: int | None = None
    after_epochs: int = 0

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"freezing.name must be one of {list(scenario_names())}, got {self.name!r}")
        if self.k < 0:
            raise ValueError(f"freezing.k must be >= 0, got {self.k}")
        if self.unfreeze_every < 1:
            raise ValueError(f"freezing.unfreeze_every must be >= 1, got {self.unfreeze_every}")
        self._check_adapter_options()
        if self.thaw_epochs is not None and self.thaw_epochs < 0:
            raise ValueError(f"freezing.thaw_epochs must be >= 0 or null, got {self.thaw_epochs}")
        if self.after_epochs < 0:
            raise ValueError(f"freezing.after_epochs must be >= 0, got {self.after_epochs}")
        SCENARIOS[self.name].check(self)

    def _check_adapter_options(self) -> None:
        if self.rank < 1:
            raise ValueError(f"freezing.rank must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise ValueError(f"freezing.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"freezing.dropout must be in [0, 1), got {self.dropout}")
        targets = self.target_modules
        valid = not isinstance(targets, str) and all(isinstance(t, str) and t for t in targets)
        if not (valid and targets):
            raise ValueError(
                f"freezing.target_modules must be a non-empty list of module names, got {targets!r}"
            )
        self.target_modules = list(targets)

    @property
    def scenario(self) -> Scenario:
        """The scenario this node selects, set up with it."""
        return SCENARIOS[self.name](self)


@dataclass
class FreezeState:
    """What `apply_freezing` left trainable: the parts with a trainable parameter, the parts
    without, and the parameter counts."""

    trainable: set[Part] = field(default_factory=set)
    frozen: set[Part] = field(default_factory=set)
    params_trainable: int = 0
    params_total: int = 0


def trainable_parts(model: MultiTaskModel, cfg: FreezingConfig, epoch: int = 0) -> set[Part]:
    """The parts of `model` that train under `cfg` at `epoch` (0-based)."""
    parts = set(model.parameter_parts().values())
    kinds = {name: task.kind for name, task in model.tasks.items()}
    return cfg.scenario.trainable(parts, kinds, epoch) & parts


def apply_freezing(model: MultiTaskModel, cfg: FreezingConfig, epoch: int = 0) -> FreezeState:
    """Set `requires_grad` on every parameter per `cfg` at `epoch`; return what trains.

    A parameter trains when `trainable` chose its part and the scenario's `trains_parameter`
    keeps it (every parameter of a chosen part, unless the scenario selects within parts).
    """
    parts = model.parameter_parts()
    chosen = trainable_parts(model, cfg, epoch)
    scenario = cfg.scenario
    state = FreezeState()
    for name, param, module in _parameters_with_modules(model):
        part = parts[name]
        param.requires_grad_(part in chosen and scenario.trains_parameter(name, part, module))
        state.params_total += param.numel()
        if param.requires_grad:
            state.params_trainable += param.numel()
            state.trainable.add(part)
    state.frozen = set(parts.values()) - state.trainable
    return state


def _parameters_with_modules(model: nn.Module) -> Iterator[tuple[str, nn.Parameter, nn.Module]]:
    """`model.named_parameters()`, each with the module that holds it."""
    holders: dict[int, nn.Module] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            holders.setdefault(id(param), module)
    for name, param in model.named_parameters():
        yield name, param, holders[id(param)]


def _fully_frozen(module: nn.Module) -> bool:
    return not any(param.requires_grad for param in module.parameters())


def set_frozen_modules_eval(model: MultiTaskModel, cfg: FreezingConfig | None = None) -> list[str]:
    """Call after `model.train()`: put fully frozen parts in eval mode (dropout off).

    Returns the names of the parts switched ("encoder" when all of it is frozen); does nothing
    when `cfg.frozen_modules_eval` is false.
    """
    if cfg is not None and not cfg.frozen_modules_eval:
        return []
    encoder = model.encoder
    modules = {EMBEDDINGS.name: encoder.embeddings}
    modules.update({Part.of_layer(i).name: layer for i, layer in enumerate(encoder.layers)})
    if _fully_frozen(encoder):
        modules = {"encoder": encoder}  # also covers dropout outside layers and embeddings
    modules.update({Part.of_head(task).name: head for task, head in model.heads.items()})
    switched = []
    for name, module in modules.items():
        if _fully_frozen(module):
            module.eval()
            switched.append(name)
    return switched
