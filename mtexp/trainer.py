"""The training loop: freezing schedule, AdamW groups, accumulation, clipping, early stopping, resume."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mtexp.checkpoint import BEST, LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from mtexp.config import RunConfig
from mtexp.data import MultiTaskData
from mtexp.data.batching import TrainBatches, train_batches
from mtexp.data.types import Corpus
from mtexp.distributed import DistContext, average_gradients, barrier, shard_batch
from mtexp.evaluate import evaluate_split
from mtexp.feature_cache import FeatureCache
from mtexp.freezing import apply_freezing, encoder_frozen_throughout, nothing_trains, set_frozen_modules_eval
from mtexp.model import ModelOutput, MultiTaskModel
from mtexp.optim import LRSchedule, add_thawed_params, build_optimizer, group_learning_rates
from mtexp.resources import PeakMemory

Batch = Mapping[str, Any]


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


@dataclass
class TrainResult:
    state: TrainState
    peak_memory_mb: float
    train_memory_mb: float
    task_steps: dict[str, int]
    params_trainable: int
    cache_seconds: float


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


class Trainer:
    """Trains a `MultiTaskModel` under one freezing scenario and optimizer schedule."""

    def __init__(
        self,
        run: RunConfig,
        model: MultiTaskModel,
        data: MultiTaskData,
        features: Any,
        device: torch.device,
        run_dir: Path,
        context: DistContext | None = None,
    ) -> None:
        self.context = context or DistContext()
        self.run = run
        self.model = model
        self.data = data
        self.features = features
        self.device = device
        self.run_dir = run_dir
        self.cfg = run.trainer
        self.cache: FeatureCache | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: LRSchedule | None = None
        self.state = TrainState()
        self.task_steps: dict[str, int] = {}
        self.params_trainable = 0
        self.cache_seconds = 0.0
        self.last_losses: dict[str, float] = {}

    # ----- set-up -------------------------------------------------------------------------
    def autocast(self):
        if self.cfg.precision != "bf16":
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

    def updates_per_epoch(self) -> int:
        return max(math.ceil(len(self.epoch_batches(0)) / self.cfg.grad_accumulation), 1)

    def build_cache(self) -> None:
        """Encode every example once when the encoder never trains (frozen-feature cache)."""
        if not (self.cfg.feature_cache and encoder_frozen_throughout(self.run.freezing)):
            return
        batches = [
            batch
            for corpus in self.data.corpora
            for split, examples in corpus.splits.items()
            if examples
            # training-size batches: the encoder's activations stay small next to the cache
            for batch in self.batches_for(corpus, split, batch_size=self.cfg.batch_size)
        ]
        started = time.perf_counter()
        self.model.encoder.eval()
        store_dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float32
        with self.autocast():
            self.cache = FeatureCache.build(self.model.encoder, batches, self.device, store_dtype)
        self.cache_seconds = time.perf_counter() - started

    def forward(self, batch: Batch) -> ModelOutput:
        batch = to_device(batch, self.device)
        with self.autocast():
            if self.cache is not None:
                token_states, pooled = self.cache.features_for(batch, split=batch.get("split", "train"))
                return self.model.forward_features(
                    token_states.to(self.device), pooled.to(self.device), batch.get("labels") or {}
                )
            return self.model(batch)

    def prepare_optimizer(self, epoch: int) -> None:
        """Optimizer and schedule as they stand at the start of `epoch` (replays gradual thawing)."""
        apply_freezing(self.model, self.run.freezing, 0)
        self.optimizer = build_optimizer(self.model, self.run.optim)
        total_steps = self.updates_per_epoch() * self.cfg.epochs
        self.schedule = LRSchedule(self.optimizer, self.run.schedule, total_steps)
        for past_epoch in range(1, epoch):
            apply_freezing(self.model, self.run.freezing, past_epoch)
            add_thawed_params(self.optimizer, self.model, self.run.optim)

    # ----- resume -------------------------------------------------------------------------
    def resume_source(self) -> Path | None:
        resume = self.cfg.resume
        if resume is True or (isinstance(resume, str) and resume.lower() == "true"):
            return self.run_dir
        if isinstance(resume, str) and resume and resume.lower() != "false":
            return Path(resume)
        return None

    def try_resume(self) -> bool:
        barrier(self.context)
        source = self.resume_source()
        checkpoint = load_checkpoint(source, LAST) if source is not None else None
        if checkpoint is None:
            return False
        self.state = TrainState(**checkpoint["state"])
        self.task_steps = dict(checkpoint.get("task_steps", {}))
        self.model.load_state_dict(checkpoint["model"])
        self.prepare_optimizer(self.state.epoch)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["schedule"])
        set_rng_state(checkpoint["rng"])
        if self.state.history:
            self.params_trainable = int(self.state.history[-1]["params_trainable"])
        if source != self.run_dir and self.context.is_main:
            best = load_checkpoint(source, BEST)
            if best is not None:
                save_checkpoint(self.run_dir, BEST, best)
        return True

    # ----- the loop -----------------------------------------------------------------------
    def fit(self) -> TrainResult:
        if nothing_trains(self.run.freezing):
            return self.evaluate_untrained()
        with PeakMemory(self.device) as memory:  # the cache counts: it is what training needs
            self.build_cache()
            if not self.try_resume():
                self.prepare_optimizer(0)
            for epoch in range(self.state.epoch, self.cfg.epochs):
                self.train_epoch(epoch)
                if self.should_stop():
                    break
        self.restore_best()
        return self.result(memory)

    def result(self, memory: PeakMemory) -> TrainResult:
        return TrainResult(
            self.state, memory.peak_mb, memory.increase_mb, dict(self.task_steps),
            self.params_trainable, self.cache_seconds,
        )

    def evaluate_untrained(self) -> TrainResult:
        """`freezing=all`: nothing trains; the model is scored as it is (the control row)."""
        self.params_trainable = apply_freezing(self.model, self.run.freezing, 0).params_trainable
        with PeakMemory(self.device) as memory:
            row = {"epoch": 0, "step": 0, "seconds": 0.0, "params_trainable": 0}
            row.update(self.dev_row())
        self.state.history.append(row)
        self.state.best_score = row["dev.score"]
        return self.result(memory)

    def train_epoch(self, epoch: int) -> None:
        freeze = apply_freezing(self.model, self.run.freezing, epoch)
        add_thawed_params(self.optimizer, self.model, self.run.optim)
        self.model.train()
        set_frozen_modules_eval(self.model, self.run.freezing)
        losses: dict[str, float] = {}
        counts: dict[str, int] = {}
        started = time.perf_counter()
        batches = self.epoch_batches(epoch)
        show = self.cfg.progress and self.context.is_main
        progress = tqdm(batches, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", disable=not show,
                        unit="batch", leave=False)
        accumulated = 0
        for global_batch in progress:
            self.state.samples_seen += int(global_batch["input_ids"].shape[0])
            batch = shard_batch(global_batch, self.context)
            output = self.forward(batch)
            (output.loss / self.cfg.grad_accumulation).backward()
            accumulated += 1
            step_losses = {name: float(loss.detach()) for name, loss in output.losses.items()}
            for name, value in step_losses.items():
                losses[name] = losses.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + 1
            self.last_losses = step_losses
            if accumulated == self.cfg.grad_accumulation:
                self.optimizer_step()
                accumulated = 0
        if accumulated:
            self.optimizer_step()
        for task, steps in batches.step_counts.items():
            self.task_steps[task] = self.task_steps.get(task, 0) + steps
        self.state.train_seconds += time.perf_counter() - started
        self.state.epoch = epoch + 1
        self.params_trainable = freeze.params_trainable
        self.end_epoch(freeze.params_trainable, losses, counts)

    def optimizer_step(self) -> None:
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        average_gradients(parameters, self.context)
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.state.step += 1
        self.log_step()

    def log_step(self) -> None:
        """Per-step losses and learning rates for `logger=csv` (written to steps.csv each epoch)."""
        logger = self.run.logger
        if logger.name != "csv" or self.state.step % logger.every_steps:
            return
        row = {"epoch": self.state.epoch + 1, "step": self.state.step}
        row.update({f"train.{name}.loss": value for name, value in self.last_losses.items()})
        row.update({f"lr.{name}": lr for name, lr in group_learning_rates(self.optimizer).items()})
        self.state.steps.append(row)

    def dev_row(self) -> dict[str, Any]:
        self.model.eval()
        dev = evaluate_split(self.data, "dev", self.forward, self.batches_for)
        return flatten("dev", dev)

    def end_epoch(self, params_trainable: int, losses: dict[str, float], counts: dict[str, int]) -> None:
        row: dict[str, Any] = {
            "epoch": self.state.epoch,
            "step": self.state.step,
            "seconds": round(self.state.train_seconds, 3),
            "params_trainable": params_trainable,
        }
        task_losses = {name: losses[name] / counts[name] for name in losses}
        row["train.loss"] = sum(self.model.loss_weights[n] * v for n, v in task_losses.items())
        row.update({f"train.{name}.loss": value for name, value in task_losses.items()})
        row.update(self.dev_row())
        row.update(flatten("train", self.train_subset_metrics()))
        row.update({f"lr.{name}": lr for name, lr in group_learning_rates(self.optimizer).items()})
        self.state.history.append(row)
        self.track_best(row)
        self.save_last()

    def train_subset_metrics(self) -> dict[str, Any]:
        """Scores on a fixed slice of train, for the overfitting gap; empty when disabled."""
        if self.run.eval.train_subset <= 0:
            return {}
        limit = self.run.eval.train_subset
        return evaluate_split(self.data, "train", self.forward, self.batches_for, limit, self.run.seed)

    def track_best(self, row: dict[str, Any]) -> None:
        score = row.get(self.cfg.early_stopping.metric)
        if score is None:
            raise KeyError(
                f"trainer.early_stopping.metric {self.cfg.early_stopping.metric!r} is not a dev metric; "
                f"choose from {sorted(k for k in row if k.startswith('dev.'))}"
            )
        best = self.state.best_score
        maximize = self.cfg.early_stopping.mode == "max"
        better = best is None or (score > best if maximize else score < best)
        if better:
            self.state.best_score = float(score)
            self.state.best_epoch = self.state.epoch
            self.state.epochs_without_improvement = 0
            if self.context.is_main:
                save_checkpoint(self.run_dir, BEST, {"model": copy.deepcopy(self.model.state_dict())})
        else:
            self.state.epochs_without_improvement += 1

    def should_stop(self) -> bool:
        patience = self.cfg.early_stopping.patience
        return patience is not None and self.state.epochs_without_improvement >= patience

    def save_last(self) -> None:
        if not self.context.is_main:
            return
        save_checkpoint(
            self.run_dir,
            LAST,
            {
                "state": vars(self.state),
                "task_steps": self.task_steps,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "rng": rng_state(),
            },
        )

    def restore_best(self) -> None:
        barrier(self.context)
        best = load_checkpoint(self.run_dir, BEST)
        if best is not None:
            self.model.load_state_dict(best["model"])


HISTORY_SKIP = frozenset({"per_entity"})


def flatten(prefix: str, nested: Mapping[str, Any]) -> dict[str, Any]:
    """`{"intent": {"accuracy": 1}}` -> `{"<prefix>.intent.accuracy": 1}` (scalars only).

    Per-entity scores stay in metrics.json; one column per entity type would swamp history.csv.
    """
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}.{key}"
        if key in HISTORY_SKIP:
            continue
        if isinstance(value, Mapping):
            flat.update(flatten(name, value))
        elif isinstance(value, (int, float)) or value is None:
            flat[name] = value
    return flat
