"""The training loop: epochs of accumulated, clipped AdamW steps, one history row per epoch.

How long it trains is the budget's plan (`mtexp.budget`). What happens around the loop lives
elsewhere: thawing in `mtexp.thawing`, step logging, early stopping and checkpoints (resume
included) in `mtexp.callbacks`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mtexp.budget import BudgetClock, BudgetPlan, TimedSchedule, plan_budget
from mtexp.callbacks import Callback, default_callbacks
from mtexp.checkpoint import rng_state, set_rng_state
from mtexp.config import RunConfig, TrainerConfig
from mtexp.data import MultiTaskData, batching
from mtexp.data.batching import TrainBatches, train_batches
from mtexp.data.types import Corpus
from mtexp.distributed import DistContext, average_gradients, broadcast_object, shard_batch
from mtexp.evaluate import evaluate_split
from mtexp.feature_cache import FeatureCache
from mtexp.feature_store import cached_features, store_key, store_root
from mtexp.model import ModelOutput, MultiTaskModel
from mtexp.optim import LRSchedule, group_learning_rates
from mtexp.precision import resolve_precision
from mtexp.progress import Progress, progress_mode
from mtexp.resources import (
    PeakMemory,
    SavedActivations,
    TrainingMemory,
    gradient_bytes,
    optimizer_state_bytes,
)
from mtexp.rundir import RunDir, flatten
from mtexp.thawing import Thawing

log = logging.getLogger(__name__)
Batch = Mapping[str, Any]
# Per-entity scores stay in metrics.json; one column per entity type would swamp history.csv.
HISTORY_SKIP = frozenset({"per_entity"})


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


def to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    moved: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            moved[key] = value.to(device, non_blocking=True)
        elif isinstance(value, Mapping):
            moved[key] = {name: tensor.to(device, non_blocking=True) for name, tensor in value.items()}
        else:
            moved[key] = value
    return moved


@contextmanager
def silenced(logger: logging.Logger) -> Iterator[None]:
    """`logger` drops its records inside the block."""
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was_disabled


class BatchRunner:
    """Batches for training and evaluation, and the forward pass under the run's precision,
    through the frozen-feature cache once it is built."""

    def __init__(self, run: RunConfig, model: MultiTaskModel, data: MultiTaskData, features: Any,
                 device: torch.device) -> None:
        self.run = run
        self.cfg: TrainerConfig = run.trainer
        self.model = model
        self.data = data
        self.features = features
        self.device = device
        self.precision = resolve_precision(self.cfg.precision, device)  # fp32 or bf16
        self.cache: FeatureCache | None = None
        self.cache_seconds = 0.0
        self.cache_status: str | None = None  # hit, miss, rebuilt (the on-disk store) or memory

    def autocast(self) -> AbstractContextManager:
        if self.precision != "bf16":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def epoch_batches(self, epoch: int) -> TrainBatches:
        return train_batches(
            self.features,
            self.cfg.batch_size,
            self.run.data.sampling,
            seed=self.run.seed,
            epoch=epoch,
            group_by_length=self.run.data.group_by_length,
        )

    def steps_per_epoch(self) -> int:
        """Optimizer steps in an epoch (every epoch plans as many batches)."""
        with silenced(batching.log):  # only counted here: an epoch's plan is logged when it trains
            planned = len(self.epoch_batches(0))
        return max(math.ceil(planned / self.cfg.grad_accumulation), 1)

    def batches_for(
        self, corpus: Corpus, split: str, indices: list[int] | None = None, batch_size: int | None = None
    ) -> Iterator[Batch]:
        """Evaluation batches (default size `eval_batch_size`), longest first: little padding."""
        table = self.features.table(corpus.name, split)
        rows = np.arange(len(table)) if indices is None else np.asarray(indices)
        rows = rows[np.argsort(-table.lengths[rows], kind="stable")]
        size = batch_size or self.cfg.eval_batch_size
        for start in range(0, len(rows), size):
            batch = self.features.collator.collate(table, rows[start : start + size], corpus.name)
            yield {**batch, "split": split}

    def build_cache(self) -> None:
        """Encode every example once when the encoder never trains (frozen-feature cache),
        or read the encoding from the on-disk store under `paths.cache_root` when another run
        made it already."""
        if not self.cfg.feature_cache or self.run.freezing.scenario.encoder_trains:
            return
        started = time.perf_counter()
        self.model.encoder.eval()
        root = store_root(self.run.paths.cache_root)
        if root is None:
            self.cache, self.cache_status = self.encode_all(), "memory"
        else:
            key, meta = store_key(self.model.encoder, self.features, self.precision,
                                  self.cfg.batch_size, self.device)
            self.cache, self.cache_status = cached_features(root, key, meta, self.encode_all, self.device)
        self.cache_seconds = time.perf_counter() - started

    def encode_all(self) -> FeatureCache:
        """The frozen encoder's outputs for every example of every split."""
        batches = [
            batch
            for corpus in self.data.corpora
            for split, examples in corpus.splits.items()
            if examples
            # training-size batches: the encoder's activations stay small next to the cache
            for batch in self.batches_for(corpus, split, batch_size=self.cfg.batch_size)
        ]
        store_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        with self.autocast():
            return FeatureCache.build(self.model.encoder, batches, self.device, store_dtype)

    def forward(self, batch: Batch) -> ModelOutput:
        batch = to_device(batch, self.device)
        with self.autocast():
            if self.cache is not None:
                token_states, pooled = self.cache.features_for(batch, split=batch.get("split", "train"))
                return self.model.forward_features(
                    token_states.to(self.device), pooled.to(self.device), batch.get("labels") or {}
                )
            return self.model(batch)

    def evaluate(self, split: str, limit: int | None = None, seed: int = 0) -> dict[str, Any]:
        """Every task's metrics on `split` (or a seeded sample of `limit` examples per corpus)."""
        return evaluate_split(self.data, split, self.forward, self.batches_for, limit, seed)

    def dev_scores(self) -> dict[str, Any]:
        """Dev metrics as history.csv columns (`dev.<task>.<metric>`), in eval mode."""
        self.model.eval()
        return flatten(self.evaluate("dev"), "dev.", skip=HISTORY_SKIP, scalars_only=True)

    def train_subset_scores(self) -> dict[str, Any]:
        """Scores on a fixed slice of train, for the overfitting gap; empty when disabled."""
        if self.run.eval.train_subset <= 0:
            return {}
        scores = self.evaluate("train", self.run.eval.train_subset, self.run.seed)
        return flatten(scores, "train.", skip=HISTORY_SKIP, scalars_only=True)


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

    # ----- the loop -----------------------------------------------------------------------
    def fit(self) -> TrainResult:
        if not self.run.freezing.scenario.anything_trains:
            return self.evaluate_untrained()
        with PeakMemory(self.device) as memory:  # the process's resident peak, cache included
            self.runner.build_cache()
            self.start()
            while self.state.epoch < self.plan.epochs and not (self.should_stop or self.budget_spent()):
                self.train_epoch(self.state.epoch)
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
        self.params_trainable = freeze.params_trainable
        self.memory.observe(gradients=gradient_bytes(self.model.parameters()),
                            optimizer=optimizer_state_bytes(self.optimizer))
        self.state.memory = dataclasses.asdict(self.memory)
        row = self.epoch_row(task_losses)
        self.state.history.append(row)
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)

    def run_batches(self, batches: TrainBatches, epoch: int) -> tuple[dict[str, float], int]:
        """One pass over an epoch's batches, or until the budget runs out; returns each task's
        mean loss and the number of batches run."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        progress = self.progress.epoch(epoch, len(batches))
        accumulated = batches_run = 0
        for global_batch in batches:
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
        """Continue from `checkpoint`: the optimizer is rebuilt as it stood, thaw steps replayed.
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
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["schedule"])
        set_rng_state(checkpoint["rng"])
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
