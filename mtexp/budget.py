"""Training budgets: how long a run trains, planned once from the length of an epoch.

`trainer.budget.name` picks one:

- `epochs` (the default): `trainer.epochs` epochs, as every run made before budgets existed;
  early stopping only where `trainer.early_stopping.patience` is set.
- `converge`: up to `max_epochs` epochs, ending when the dev metric of `trainer.early_stopping`
  has not improved for `patience` epochs.
- `steps`: `steps` optimizer steps, in as many epochs as they take (the last one cut short).
- `time`: `seconds` of training, the frozen-feature cache's build included (as
  `cost.train_seconds` counts it), at most `max_epochs` epochs; the epoch in which the time runs
  out ends there.

Every budget but `time` trains at least `min_steps` optimizer steps: epochs are added until the
plan reaches them, and early stopping waits for them. The learning-rate schedule runs over the
planned optimizer steps (`epochs` and `converge`: the epochs' steps, cut short where `converge`
stops early; `steps`: the step budget). Under `time` the number of steps is not known in advance,
so the schedule's shape (warm-up, decay) is laid over the share of the budget's seconds spent
instead (`TimedSchedule`): it ends when the budget does, whatever the speed. Runs under `time`
are not bitwise reproducible, as no run stopped by a clock is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from mtexp.optim import LRSchedule, ScheduleConfig

if TYPE_CHECKING:
    from mtexp.config import TrainerConfig

BUDGETS = ("epochs", "converge", "steps", "time")


def _check(condition: bool, key: str, expected: str, got: Any) -> None:
    if not condition:
        raise ValueError(f"trainer.budget.{key} must be {expected}, got {got!r}")


@dataclass
class BudgetConfig:
    """The `trainer.budget` node (see the module docstring)."""

    name: str = "epochs"
    max_epochs: int = 20  # converge and time: at most this many epochs
    patience: int = 3  # converge: epochs without improvement of the dev metric before stopping
    steps: int | None = None  # steps: optimizer steps
    seconds: float | None = None  # time: seconds of training
    min_steps: int = 0  # every budget but time: at least this many optimizer steps

    def __post_init__(self) -> None:
        _check(self.name in BUDGETS, "name", f"one of {BUDGETS}", self.name)
        _check(self.max_epochs >= 1, "max_epochs", ">= 1", self.max_epochs)
        _check(self.patience >= 1, "patience", ">= 1", self.patience)
        _check(self.min_steps >= 0, "min_steps", ">= 0", self.min_steps)
        if self.name == "steps" or self.steps is not None:
            _check(self.steps is not None and self.steps >= 1, "steps", ">= 1 under budget steps",
                   self.steps)
        if self.name == "time" or self.seconds is not None:
            _check(self.seconds is not None and self.seconds > 0, "seconds", "> 0 under budget time",
                   self.seconds)


@dataclass
class BudgetPlan:
    """What a budget comes to for one run, in epochs and optimizer steps.

    `epochs` is the most epochs the run may train (the last one may be cut short by
    `step_limit` or `seconds`); `schedule_steps` the learning-rate schedule's length;
    `complete_from` the first epoch (0-based) from which the freezing scenario trains what it
    will train to the end: earlier epochs are never the best epoch, and early stopping does not
    count them.
    """

    name: str
    epochs: int
    schedule_steps: int
    steps_per_epoch: int
    step_limit: int | None = None
    seconds: float | None = None
    patience: int | None = None
    min_steps: int = 0
    complete_from: int = 0

    def record(self) -> dict[str, Any]:
        """The plan as metrics.json's `budget`."""
        return asdict(self)


def plan_budget(trainer: TrainerConfig, steps_per_epoch: int) -> BudgetPlan:
    """The plan of `trainer.budget` for epochs of `steps_per_epoch` optimizer steps."""
    budget = trainer.budget
    per_epoch = max(steps_per_epoch, 1)
    patience = trainer.early_stopping.patience
    min_epochs = math.ceil(budget.min_steps / per_epoch)
    if budget.name == "steps":
        target = max(int(budget.steps), budget.min_steps)
        return BudgetPlan("steps", math.ceil(target / per_epoch), target, per_epoch, step_limit=target,
                          patience=patience, min_steps=budget.min_steps)
    if budget.name == "time":
        return BudgetPlan("time", budget.max_epochs, budget.max_epochs * per_epoch, per_epoch,
                          seconds=float(budget.seconds), patience=patience)
    if budget.name == "converge":
        epochs, patience = max(budget.max_epochs, min_epochs), budget.patience
    else:
        epochs = max(trainer.epochs, min_epochs)
    return BudgetPlan(budget.name, epochs, epochs * per_epoch, per_epoch, patience=patience,
                      min_steps=budget.min_steps)


@dataclass
class BudgetClock:
    """Where a run stands against its plan's step and time limits; `seconds` is the training
    time spent as of the last optimizer step (set by the trainer)."""

    plan: BudgetPlan
    seconds: float = 0.0

    def share(self) -> float:
        """The share of a time budget spent (0 without one)."""
        return self.seconds / self.plan.seconds if self.plan.seconds else 0.0

    def spent(self, steps: int) -> bool:
        """The step or time limit is reached after `steps` optimizer steps (never at 0)."""
        if steps == 0:
            return False
        if self.plan.step_limit is not None and steps >= self.plan.step_limit:
            return True
        return self.plan.seconds is not None and self.seconds >= self.plan.seconds


class TimedSchedule(LRSchedule):
    """`LRSchedule`'s shape over the share of a time budget spent rather than over steps.

    `spent()` returns that share (0 at the start, 1 when the budget is spent); the multiplier is
    the schedule's at the same share of a long nominal run, so warm-up ratios and cut fractions
    keep their meaning as shares of the budget's seconds.
    """

    NOMINAL_STEPS = 100_000

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig,
                 spent: Callable[[], float]) -> None:
        self.spent = spent
        super().__init__(optimizer, cfg, self.NOMINAL_STEPS)

    def multiplier(self, step: int) -> float:
        """The multiplier now (`step` is not used: the clock decides)."""
        share = min(max(self.spent(), 0.0), 1.0)
        return super().multiplier(round(share * self.total_steps))
