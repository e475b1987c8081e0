"""The training loop: epochs of accumulated, clipped AdamW steps, one history row per epoch.

How long it trains is the budget's plan (`mtexp.budget`). What happens around the loop lives
elsewhere: thawing in `mtexp.thawing`, step logging, early stopping and checkpoints (resume
included) in `mtexp.callbacks`.

SIGTERM and SIGINT are held while the loop runs (`mtexp.interrupts`): at the next step boundary
(every rank at the same one) the loop records where it is in the epoch's batch order, the
callbacks write the checkpoint (`Callback.on_interrupt`), and the signal is delivered. A run
resumed from that checkpoint skips the epoch's batches already trained and goes on exactly as
the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch

from mtexp.batchrunner import BatchRunner, to_device
from mtexp.budget import BudgetClock, BudgetPlan, TimedSchedule, plan_budget
from mtexp.callbacks import Callback, default_callbacks
from mtexp.checkpoint import rng_state, set_rng_state
from mtexp.config import RunConfig
from mtexp.data import MultiTaskData
from mtexp.data.batching import TrainBatches
from mtexp.distributed import DistContext, agreed_max, average_gradients, broadcast_object, shard_batch
from mtexp.interrupts import HeldSignals
from mtexp.model import MultiTaskModel
from mtexp.optim import LRSchedule, group_learning_rates
from mtexp.progress import Progress, progress_mode
from mtexp.resources import (
    PeakMemory,
    SavedActivations,
    TrainingMemory,
    gradient_bytes,
    optimizer_state_bytes,
)
from mtexp.rundir import RunDir
from mtexp.thawing import Thawing

__all__ = ["BatchRunner", "TrainResult", "TrainState", "Trainer", "task_steps_run", "to_device"]

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Everything the loop needs to continue after a restart."""

    epoch: int = 0
    step: int = 0
    best_score: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    train_seconds: float = 0.0
    samples_seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False  # early stopping ended the run (patience ran out)
    cache_seconds: float = 0.0  # feature-cache builds, every session's (the time budget counts them)
    plan: dict[str, Any] = field(default_factory=dict)  # the budget's plan (`BudgetPlan`)
    memory: dict[str, int] = field(default_factory=dict)  # `TrainingMemory` so far
    # An epoch stopped mid-way by a signal (0 and empty at an epoch's end): the batches of its
    # order already trained, and their losses' sums and counts per task.
    batches_done: int = 0
    loss_sums: dict[str, float] = field(default_factory=dict)
    loss_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class TrainResult:
    state: TrainState
    peak_memory_mb: float
    memory: TrainingMemory
    task_steps: dict[str, int]
    params_trainable: int
    cache_seconds: float
    plan: BudgetPlan
    cache_status: str | None = None  # the frozen-feature cache: hit, miss, rebuilt, memory; None: none
    precision: str = "fp32"  # what trainer.precision resolved to

    @property
    def train_memory_mb(self) -> float:
        """What training needs (`TrainingMemory`), in MB."""
        return self.memory.total_mb

class Trainer:
    """Trains a `MultiTaskModel` under one freezing scenario, optimizer schedule and budget."""

    def __init__(self, run: RunConfig, model: MultiTaskModel, data: MultiTaskData, features: Any,
                 device: torch.device, run_dir: RunDir, context: DistContext | None = None,
                 callbacks: Sequence[Callback] | None = None) -> None:
        self.context = context or DistContext()
        self.run = run
        self.cfg = run.trainer
        self.model = model
        self.device = device
        self.runner = BatchRunner(run, model, data, features, device)
        plan = plan_budget(self.cfg, self.runner.steps_per_epoch())
        self.thawing = Thawing.within_budget(model, run.freezing, run.optim, run.schedule, plan.epochs)
        self.plan = dataclasses.replace(plan, complete_from=self.thawing.complete_from(plan.epochs))
        self.callbacks = list(callbacks if callbacks is not None
                              else default_callbacks(run, run_dir, self.context))
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: LRSchedule | None = None
        self.state = TrainState()
        self.task_steps: dict[str, int] = {}
        self.params_trainable = 0
        self.last_losses: dict[str, float] = {}
        self.should_stop = False
        self.memory = TrainingMemory()
        self.parameter_storages: set[int] = set()
        self.epoch_started: float | None = None
        self.clock = BudgetClock(self.plan)
        self.progress = Progress(progress_mode(self.cfg.progress and self.context.is_main), self.plan.epochs)
        self.signals: HeldSignals | None = None  # while the loop runs

    # ----- the loop -----------------------------------------------------------------------
    def fit(self) -> TrainResult:
        if not self.run.freezing.scenario.anything_trains:
            return self.evaluate_untrained()
        with PeakMemory(self.device) as memory:  # the process's resident peak, cache included
            self.runner.build_cache()
            self.start()
            with HeldSignals() as self.signals:
                while self.state.epoch < self.plan.epochs and not (self.should_stop or self.budget_spent()):
                    self.train_epoch(self.state.epoch)
                    signum = self.signalled()
                    if signum:  # the epoch's checkpoint is written: nothing more to save
                        self.signals.deliver(signum)
            self.signals = None
        for callback in self.callbacks:
            callback.on_fit_end(self)
        return self.result(memory)

    def start(self) -> None:
        """A fresh optimizer, unless a callback resumed from a checkpoint (which rebuilds it)."""
        for callback in self.callbacks:
            callback.on_fit_start(self)
        self.state.cache_seconds += self.runner.cache_seconds
        self.clock = BudgetClock(self.plan, self.seconds_spent())
        if self.optimizer is None:
            self.optimizer, self.schedule = self.optimizer_at(0)
        self.state.plan = self.plan.record()
        self.parameter_storages = SavedActivations.storages_of(self.model.parameters())
        cache_bytes = self.runner.cache.memory_bytes() if self.runner.cache is not None else 0
        self.memory = TrainingMemory(**self.state.memory)
        self.memory.observe(cache=cache_bytes)

    def optimizer_at(self, epoch: int) -> tuple[torch.optim.Optimizer, LRSchedule]:
        """Optimizer and schedule at the start of `epoch`; under a time budget the schedule
        follows the share of the seconds spent."""
        optimizer, schedule = self.thawing.optimizer_at(epoch, self.plan.schedule_steps)
        if self.plan.seconds is not None:
            schedule = TimedSchedule(optimizer, self.run.schedule, lambda: self.clock.share())
        return optimizer, schedule

    def train_epoch(self, epoch: int) -> None:
        freeze = self.thawing.start_epoch(self.optimizer, epoch)
        started = self.epoch_started = time.perf_counter()
        batches = self.runner.epoch_batches(epoch)
        task_losses, batches_run = self.run_batches(batches, epoch)
        for task, steps in task_steps_run(batches, batches_run).items():
            self.task_steps[task] = self.task_steps.get(task, 0) + steps
        self.state.train_seconds += time.perf_counter() - started
        self.epoch_started = None
        self.state.epoch = epoch + 1
        self.state.batches_done, self.state.loss_sums, self.state.loss_counts = 0, {}, {}
        self.params_trainable = freeze.params_trainable
        self.memory.observe(gradients=gradient_bytes(self.model.parameters()),
                            optimizer=optimizer_state_bytes(self.optimizer))
        self.state.memory = dataclasses.asdict(self.memory)
        row = self.epoch_row(task_losses)
        self.state.history.append(row)
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)

    def run_batches(self, batches: TrainBatches, epoch: int) -> tuple[dict[str, float], int]:
        """One pass over an epoch's batches (from where an interrupted attempt stopped), or until
        the budget runs out; returns each task's mean loss and the number of batches run."""
        sums, counts = dict(self.state.loss_sums), dict(self.state.loss_counts)
        batches_run = self.state.batches_done
        progress = self.progress.epoch(epoch, len(batches) - batches_run)
        accumulated = 0
        for global_batch in batches.iterate(batches_run):
            samples = int(global_batch["input_ids"].shape[0])
            self.state.samples_seen += samples
            with SavedActivations(self.parameter_storages) as saved:
                output = self.runner.forward(shard_batch(global_batch, self.context))
            self.memory.observe(activations=saved.bytes)
            (output.loss / self.cfg.grad_accumulation).backward()
            accumulated += 1
            batches_run += 1
            self.last_losses = {name: float(loss.detach()) for name, loss in output.losses.items()}
            for name, value in self.last_losses.items():
                sums[name] = sums.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + 1
            progress.advance(samples)
            if accumulated == self.cfg.grad_accumulation:
                self.optimizer_step()
                accumulated = 0
                if self.budget_spent():
                    break
                signum = self.signalled()
                if signum:
                    progress.stop()
                    self.interrupt(batches_run, sums, counts, signum)
        if accumulated:
            self.optimizer_step()
        progress.close()
        return {name: sums[name] / counts[name] for name in sums}, batches_run

    def optimizer_step(self) -> None:
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        average_gradients(parameters, self.context)
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.plan.seconds is not None:  # every rank reads rank 0's clock: the same lr, the same end
            self.clock.seconds = broadcast_object(self.seconds_spent(), self.context)
        self.schedule.step()
        self.state.step += 1
        for callback in self.callbacks:
            callback.on_step_end(self)

    # ----- signals ------------------------------------------------------------------------
    def signalled(self) -> int:
        """A termination signal held on any rank since the loop began; 0 when none."""
        pending = self.signals.pending if self.signals is not None else None
        return agreed_max(pending or 0, self.context, self.device)

    def interrupt(self, batches_done: int, sums: dict[str, float], counts: dict[str, int],
                  signum: int) -> NoReturn:
        """Stop between two steps of an epoch: the state records where, the callbacks save it
        (the checkpoint), then the signal is delivered (`RunInterrupted`)."""
        self.state.train_seconds += time.perf_counter() - self.epoch_started
        self.epoch_started = None
        self.state.batches_done, self.state.loss_sums, self.state.loss_counts = batches_done, sums, counts
        self.state.memory = dataclasses.asdict(self.memory)
        for callback in self.callbacks:
            callback.on_interrupt(self)
        log.warning("stopped at step %d, %d batches into epoch %d: continue with trainer.resume=true",
                    self.state.step, batches_done, self.state.epoch + 1)
        self.signals.deliver(signum)

    # ----- the budget ---------------------------------------------------------------------
    def seconds_spent(self) -> float:
        """Training seconds so far, the feature cache's builds included."""
        running = time.perf_counter() - self.epoch_started if self.epoch_started is not None else 0.0
        return self.state.train_seconds + self.state.cache_seconds + running

    def budget_spent(self) -> bool:
        return self.clock.spent(self.state.step)

    # ----- rows and results ---------------------------------------------------------------
    def epoch_row(self, task_losses: dict[str, float]) -> dict[str, Any]:
        """The history.csv row of the epoch just trained."""
        row: dict[str, Any] = {
            "epoch": self.state.epoch,
            "step": self.state.step,
            "seconds": round(self.state.train_seconds, 3),
            "params_trainable": self.params_trainable,
        }
        row["train.loss"] = sum(self.model.loss_weights[n] * v for n, v in task_losses.items())
        row.update({f"train.{name}.loss": value for name, value in task_losses.items()})
        row.update(self.runner.dev_scores())
        row.update(self.runner.train_subset_scores())
        row.update({f"lr.{name}": lr for name, lr in group_learning_rates(self.optimizer).items()})
        return row

    def evaluate_untrained(self) -> TrainResult:
        """`freezing=all`: nothing trains; the model is scored as it is (the control row)."""
        self.params_trainable = self.thawing.freeze(0).params_trainable
        with PeakMemory(self.device) as memory:
            row = {"epoch": 0, "step": 0, "seconds": 0.0, "params_trainable": 0}
            row.update(self.runner.dev_scores())
        self.state.history.append(row)
        self.state.best_score = row["dev.score"]
        return self.result(memory)

    def result(self, memory: PeakMemory) -> TrainResult:
        return TrainResult(
            self.state, memory.peak_mb, self.memory, dict(self.task_steps),
            self.params_trainable, self.runner.cache_seconds, self.plan,
            self.runner.cache_status, self.runner.precision,
        )

    # ----- checkpoint state ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What `last.pt` holds: loop state (the budget's plan included), model, optimizer,
        schedule and RNG."""
        return {
            "state": vars(self.state),
            "task_steps": self.task_steps,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        """Continue from `checkpoint` (an epoch's end, or a step within an epoch): the optimizer is
        rebuilt as it stood, thaw steps replayed.
        The budget is the config's, as planned at the start (a resume under a changed one is
        refused before the run starts, `mtexp.checkpoint.check_resume`, unless the checkpoint
        predates fingerprints); steps and seconds already spent count against it."""
        self.state = TrainState(**checkpoint["state"])
        if self.state.plan and BudgetPlan(**self.state.plan) != self.plan:
            log.info("the budget differs from the checkpoint's (%s): training goes on under %s",
                     self.state.plan, self.plan.record())
        self.task_steps = dict(checkpoint.get("task_steps", {}))
        self.model.load_state_dict(checkpoint["model"])
        self.clock = BudgetClock(self.plan, self.seconds_spent())
        self.optimizer, self.schedule = self.optimizer_at(self.state.epoch)
        if self.state.batches_done:  # stopped mid-epoch: the epoch's thaw step was taken
            self.thawing.thaw(self.optimizer, self.state.epoch)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["schedule"])
        set_rng_state(checkpoint["rng"])
        self.should_stop = self.state.stopped_early
        if self.state.history:
            self.params_trainable = int(self.state.history[-1]["params_trainable"])


def task_steps_run(batches: TrainBatches, batches_run: int) -> dict[str, int]:
    """Batches per task among the first `batches_run` of the epoch (all of them: its plan's)."""
    if batches_run >= len(batches):
        return dict(batches.step_counts)
    corpus_steps = Counter(batches.plan[:batches_run])
    counts = dict.fromkeys(batches.step_counts, 0)
    for corpus in batches.features.data.corpora:
        for task in corpus.tasks:
            counts[task] += corpus_steps.get(corpus.name, 0)
    return counts
