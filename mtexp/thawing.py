"""Thawing: which parameters train in each epoch, and the optimizer that follows them.

Under gradual unfreezing parameters thaw as epochs pass; each one joins the optimizer when it
thaws, at the learning-rate multiplier then in force. A run resumed at epoch `e` replays the
thaw steps of epochs 1..e-1 on a fresh optimizer, so that its parameter groups line up, in
order, with the optimizer state saved in the checkpoint. A part that freezes again (a head frozen
after `freezing.after_epochs`) stays in the optimizer without a gradient: AdamW leaves it as it is.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from mtexp.freezing import (
    FreezeState,
    FreezingConfig,
    apply_freezing,
    set_frozen_modules_eval,
    trainable_parts,
)
from mtexp.optim import LRSchedule, OptimConfig, ScheduleConfig, add_thawed_params, build_optimizer


class Thawing:
    """Applies a freezing scenario epoch by epoch to a model and to its optimizer."""

    def __init__(self, model: nn.Module, freezing: FreezingConfig, optim: OptimConfig,
                 schedule: ScheduleConfig) -> None:
        self.model = model
        self.freezing = freezing
        self.optim = optim
        self.schedule = schedule

    @classmethod
    def within_budget(cls, model: nn.Module, freezing: FreezingConfig, optim: OptimConfig,
                      schedule: ScheduleConfig, epochs: int) -> Thawing:
        """Thawing for a run whose budget allows `epochs` epochs: the scenario paces its thaw steps
        by them unless `freezing.thaw_epochs` is set (see `mtexp.scenarios.Gradual`)."""
        if freezing.thaw_epochs is None:
            freezing = dataclasses.replace(freezing, thaw_epochs=epochs)
        freezing.scenario.check_budget(epochs)
        return cls(model, freezing, optim, schedule)

    def complete_from(self, epochs: int) -> int:
        """The first epoch (0-based, below `epochs`) from which what trains no longer changes."""
        last_change = 0
        previous = trainable_parts(self.model, self.freezing, 0)
        for epoch in range(1, epochs):
            current = trainable_parts(self.model, self.freezing, epoch)
            if current != previous:
                last_change, previous = epoch, current
        return last_change

    def freeze(self, epoch: int) -> FreezeState:
        """Set what trains in `epoch` (0-based) without touching any optimizer."""
        return apply_freezing(self.model, self.freezing, epoch)

    def optimizer_at(self, epoch: int, total_steps: int) -> tuple[torch.optim.AdamW, LRSchedule]:
        """Optimizer and schedule as they stand at the start of `epoch` (past thaw steps replayed)."""
        self.freeze(0)
        optimizer = build_optimizer(self.model, self.optim)
        schedule = LRSchedule(optimizer, self.schedule, total_steps)
        for past_epoch in range(1, epoch):
            self.thaw(optimizer, past_epoch)
        return optimizer, schedule

    def thaw(self, optimizer: torch.optim.Optimizer, epoch: int) -> FreezeState:
        """Freeze as `epoch` says and give the parameters that thawed to `optimizer`."""
        state = self.freeze(epoch)
        add_thawed_params(optimizer, self.model, self.optim)
        return state

    def start_epoch(self, optimizer: torch.optim.Optimizer, epoch: int) -> FreezeState:
        """Thaw for `epoch`, then train mode, with fully frozen modules in eval mode (no dropout)."""
        state = self.thaw(optimizer, epoch)
        self.model.train()
        set_frozen_modules_eval(self.model, self.freezing)
        return state
