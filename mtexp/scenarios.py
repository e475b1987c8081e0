"""Freezing scenarios: one class each, registered under the name of its `freezing` config option.

A scenario says which parts of a model (`mtexp.parts.Part`) train at each epoch, and what the
trainer, the report and the claims need to know about it: whether the encoder ever trains,
whether anything trains, whether it is the reference row, which head it freezes. Adding one
takes a `Scenario` subclass decorated with `@register` here (or in any module imported before
the config is validated) and `conf/freezing/<name>.yaml` with `name: <name>`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, ClassVar

from mtexp.parts import EMBEDDINGS, ENCODER_OTHER, Part
from mtexp.tasks import HEAD_ALIASES, resolve_head

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from mtexp.freezing import FreezingConfig
    from mtexp.model import MultiTaskModel

GROUP = "freezing"  # the config group, and the run-table column, whose options are the scenarios
SCENARIOS: dict[str, type[Scenario]] = {}


class Scenario:
    """A freezing scenario, built from the `freezing` config node it runs under."""

    name: ClassVar[str]
    reference: ClassVar[bool] = False  # the row every other scenario is compared with
    encoder_trains: ClassVar[bool] = True  # False: the encoder never trains, its outputs can be cached
    anything_trains: ClassVar[bool] = True  # False: the run only evaluates the model as it is
    legacy: ClassVar[bool] = False  # a name kept so that old runs load; no config option of its own
    # `mtexp-tune` searches learning rates log-uniformly in this range (`mtexp.tune`).
    lr_range: ClassVar[tuple[float, float]] = (1e-5, 1e-3)

    def __init__(self, cfg: FreezingConfig) -> None:
        self.cfg = cfg

    @classmethod
    def check(cls, cfg: FreezingConfig) -> None:
        """Raise ValueError, naming the key, when `cfg` cannot work for this scenario."""

    def check_budget(self, epochs: int) -> None:
        """Raise ValueError, naming the key, when the scenario cannot play out in `epochs` epochs."""

    def check_layers(self, layers: int) -> None:
        """Raise ValueError, naming the key, when the scenario cannot work on an encoder of
        `layers` layers (checked before any data loads, where the layer count is known)."""

    def trainable(self, parts: Collection[Part], kinds: Mapping[str, str], epoch: int) -> set[Part]:
        """The parts among `parts` that train at `epoch` (0-based); `kinds` maps each task to
        its kind, in task order."""
        raise NotImplementedError

    def trains_parameter(self, name: str, part: Part, module: nn.Module) -> bool:
        """Whether parameter `name` of a part that `trainable` chose trains; `module` is the
        module that holds it. All of a chosen part trains unless a scenario says otherwise."""
        return True

    def prepare(self, model: MultiTaskModel) -> None:
        """Change the model as the scenario needs (e.g. add adapters): called once when the
        model is built, before the optimizer and before a resumed run loads its checkpoint."""

    def finish(self, model: MultiTaskModel, run_dir: Path | None) -> None:
        """Called once after training (best epoch restored), before evaluation, drift and
        saving; `run_dir` is None where this process writes no files."""


def register(cls: type[Scenario]) -> type[Scenario]:
    """Class decorator: make `cls` the scenario of `freezing.name=<cls.name>`."""
    name = getattr(cls, "name", None)
    if not name or name in SCENARIOS:
        raise ValueError(f"{cls.__name__}: a scenario needs a name of its own, got {name!r}")
    SCENARIOS[cls.name] = cls
    return cls


def scenario_names(where: Callable[[type[Scenario]], bool] = lambda s: True,
                   legacy: bool = True) -> tuple[str, ...]:
    """Registered names in display order (the reference first, then as registered), filtered by
    `where`; legacy names only with `legacy=True`."""
    chosen = [s for s in SCENARIOS.values() if where(s) and (legacy or not s.legacy)]
    return tuple(s.name for s in sorted(chosen, key=lambda s: not s.reference))


def heads(parts: Collection[Part]) -> set[Part]:
    return {part for part in parts if part.kind == "head"}


def num_layers(parts: Collection[Part]) -> int:
    """The number of encoder layers, from the layer parts."""
    return 1 + max((part.layer for part in parts if part.kind == "layer"), default=-1)


@register
class NoFreezing(Scenario):
    """Everything trains: the reference row."""

    name = "none"
    reference = True

    def trainable(self, parts: Collection[Part], kinds: Mapping[str, str], epoch: int) -> set[Part]:
        return set(parts)


@register
class AllFrozen(Scenario):
    """Nothing trains: the untrained heads on the pre-trained encoder, scored as they are."""

    name = "all"
    encoder_trains = False
    anything_trains = False

    def trainable(self, parts: Collection[Part], kinds: Mapping[str, str], epoch: int) -> set[Part]:
        return set()


@register
class BackboneFrozen(Scenario):
    """The heads train on the frozen encoder."""

    name = "backbone"
    encoder_trains = False
    lr_range = (1e-4, 1e-1)  # heads alone on fixed features take far larger steps

    def trainable(self, parts: Collection[Part], kinds: Mapping[str, str], epoch: int) -> set[Part]:
        return heads(parts)


@register
class Partial(Scenario):
    """The embeddings and the bottom `freezing.k` layers stay frozen; the rest trains."""

    name = "partial"

    def check_layers(self, layers: int) -> None:
        if self.cfg.k > layers:
            raise ValueError(f"freezing.k must be at most the backbone's {layers} layers, got {self.cfg.k}")

    def trainable(self, parts: Collection[Part], kinds: Mapping[str, str], epoch: int) -> set[Part]:
        layers = num_layers(parts)
        if self.cfg.k > layers:
            raise ValueError(f"freezing.k={self.cfg.k} but the encoder has only {layers} layers")
        return set(parts) - {EMBEDDINGS} - {Part.of_layer(i) for i in range(self.cfg.k)}


@register
class Gradual(Scenario):
    """ULMFiT's gradual unfreezing: the heads alone in epoch 0, then encoder layers from the top
    (the first thaw step with the rest of the encoder), the embeddings last: L layers take L + 1
    thaw steps.

    Pace: one thaw step every `freezing.unfreeze_every` epochs, or faster where the budget needs
    it. With a horizon of E epochs (`freezing.thaw_epochs`; by default the run's budget in
    epochs: `trainer.epochs`, the epochs a step budget takes, `max_epochs` under converge or
    time), the L + 1 steps are spread evenly over epochs 1..D, D = ceil(3E/4) - 1 being the last
    epoch that starts before the last quarter of the budget, so that the whole encoder, the
    embeddings included, trains for at least that last quarter. Epoch e has
    max(e // unfreeze_every, ceil(e (L + 1) / D)) steps thawed (all of them from epoch 0 when
    D = 0, i.e. E = 1). `freezing.thaw_epochs=0` keeps the plain pace whatever the budget.
    """

    name = "gradual"

    def trainable(self, parts: Collection[Part], kinds: Mapping[str, str], epoch: int) -> set[Part]:
        layers = num_layers(parts)
        return heads(parts) | thawed_encoder_parts(layers, self.thaw_steps(epoch, layers))

    def thaw_steps(self, epoch: int, layers: int) -> int:
        """Thaw steps taken by `epoch` (0-based) for an encoder of `layers` layers (at most L + 1)."""
        epoch = max(epoch, 0)
        steps = epoch // self.cfg.unfreeze_every
        horizon = self.cfg.thaw_epochs
        if horizon:
            last = math.ceil(3 * horizon / 4) - 1
            spread = layers + 1 if last <= 0 else math.ceil(epoch * (layers + 1) / last)
            steps = max(steps, spread)
        return min(steps, layers + 1)


def thawed_encoder_parts(layers: int, thawed: int) -> set[Part]:
    """Encoder parts thawed after `thawed` steps: top layers first (with encoder.other), embeddings last."""
    parts = {Part.of_layer(i) for i in range(max(layers - thawed, 0), layers)}
    if thawed >= 1:
        parts.add(ENCODER_OTHER)
    if thawed > layers:
        parts.add(EMBEDDINGS)
    return parts


class FrozenHead(Scenario):
    """One head is frozen; the encoder and the other heads train. The head is `freezing.head`
    (a task name, or A / B) or, when that is empty, the scenario's `head`.

    `freezing.after_epochs: N` freezes a trained head: every part trains jointly for the first N
    epochs, then the head is frozen (its parameters keep no gradient and leave the optimizer's
    updates) and training goes on. The frozen head's loss still counts in the total
    (`model.loss_weights` unchanged), so the encoder keeps serving the task whose head it can no
    longer move. N = 0 (the default) freezes the head at its initial weights from the start.
    """

    head: ClassVar[str | None] = None

    @classmethod
    def check(cls, cfg: FreezingConfig) -> None:
        if not (cfg.head or cls.head):
            raise ValueError(f"freezing.head must name a task (or A / B) when freezing.name={cls.name}")

    def check_budget(self, epochs: int) -> None:
        if self.cfg.after_epochs and self.cfg.after_epochs >= epochs:
            raise ValueError(f"freezing.after_epochs={self.cfg.after_epochs} leaves no epoch with the "
                             f"head frozen in a budget of {epochs} epochs")

    def frozen_task(self, kinds: Mapping[str, str]) -> str:
        head = self.cfg.head or self.head
        task = resolve_head(head, kinds)
        if task is not None:
            return task
        if head in HEAD_ALIASES:
            raise ValueError(f"freezing.head={head} but the model has no {HEAD_ALIASES[head]} task")
        raise ValueError(f"freezing.head={head!r} is not a task: tasks are {sorted(kinds)} (or A / B)")

    def trainable(self, parts: Collection[Part], kinds: Mapping[str, str], epoch: int) -> set[Part]:
        frozen = Part.of_head(self.frozen_task(kinds))
        return set(parts) if epoch < self.cfg.after_epochs else set(parts) - {frozen}


@register
class HeadAFrozen(FrozenHead):
    """Task A's head (the first sequence task) frozen."""

    name = "head_a"
    head = "A"


@register
class HeadBFrozen(FrozenHead):
    """Task B's head (the first token task) frozen."""

    name = "head_b"
    head = "B"


@register
class OneHeadFrozen(FrozenHead):
    """The name that runs made before `head_a` / `head_b` were scenarios of their own record
    (`freezing.name: one_head` with `freezing.head: A` or `B`); kept so that they still load."""

    name = "one_head"
    legacy = True


def frozen_head(name: str) -> str | None:
    """The head (A / B) that scenario `name` freezes when `freezing.head` is empty; None for a
    scenario that freezes no head or an unknown name."""
    scenario = SCENARIOS.get(name)
    return scenario.head if scenario is not None and issubclass(scenario, FrozenHead) else None


@register
class BitFit(Scenario):
    """BitFit (Ben Zaken et al., 2022): of the encoder only the bias terms train (those of the
    LayerNorms included), and with `freezing.layer_norm` every LayerNorm parameter; the heads
    train in full."""

    name = "bitfit"
    lr_range: ClassVar[tuple[float, float]] = (1e-4, 1e-2)

    def trainable(self, parts: Collection[Part], kinds: Mapping[str, str], epoch: int) -> set[Part]:
        return set(parts)

    def trains_parameter(self, name: str, part: Part, module: nn.Module) -> bool:
        from mtexp.optim import is_norm_layer

        if not part.in_encoder:
            return True
        return name.rpartition(".")[2] == "bias" or (self.cfg.layer_norm and is_norm_layer(module))


@register
class LoRA(Scenario):
    """Low-rank adapters (Hu et al., 2022) on the encoder's `freezing.target_modules` (and its
    feed-forward projections with `freezing.feed_forward`) train, the base weights stay frozen;
    the heads train in full. After training the adapters are saved in the run directory and
    merged into the encoder (`mtexp.adapters`)."""

    name = "lora"
    lr_range: ClassVar[tuple[float, float]] = (1e-4, 1e-2)

    def trainable(self, parts: Collection[Part], kinds: Mapping[str, str], epoch: int) -> set[Part]:
        return set(parts)

    def trains_parameter(self, name: str, part: Part, module: nn.Module) -> bool:
        from mtexp.adapters import is_adapter_parameter

        return not part.in_encoder or is_adapter_parameter(name)

    def prepare(self, model: MultiTaskModel) -> None:
        from mtexp.adapters import add_adapters

        add_adapters(model, self.cfg)

    def finish(self, model: MultiTaskModel, run_dir: Path | None) -> None:
        from mtexp.adapters import save_and_merge_adapters

        save_and_merge_adapters(model, run_dir)
