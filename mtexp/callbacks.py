"""Training-loop callbacks: per-step logging, early stopping, checkpoints.

The `Trainer` calls every callback's hooks in list order: `on_fit_start` before the first epoch,
`on_step_end` after each optimizer step, `on_epoch_end` after each epoch's history row is
recorded, `on_interrupt` when a signal stops the loop between two steps of an epoch (the loop's
state whole, ready to save), `on_fit_end` after the last epoch. A callback that keeps state of
its own returns it from `state_dict()`: checkpoints carry it, and a resumed run gives it back
through `load_state_dict` before the first epoch. A callback asks the loop to end by setting
`trainer.should_stop`. `on_run_end` comes from the run around the trainer (`finishing`): after the
run directory's files are written, or after the run failed. Code that drives runs (`mtexp.tune`)
adds callbacks of its own to every run started inside `extra_callbacks(...)`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtexp.checkpoint import check_labels, fingerprint
from mtexp.config import ConfigError, EarlyStoppingConfig, RunConfig, logger_names
from mtexp.distributed import DistContext, barrier
from mtexp.optim import group_learning_rates
from mtexp.rundir import BEST, LAST, RunDir

if TYPE_CHECKING:
    from mtexp.trainer import Trainer


class Callback:
    """Hooks into the training loop; each does nothing unless overridden."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch, the feature cache built."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After an optimizer step (`trainer.state.step` counts it)."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """After an epoch; `row` is its history row, already in `trainer.state.history`."""

    def on_interrupt(self, trainer: Trainer) -> None:
        """A signal stops training after `trainer.state.step`, `trainer.state.batches_done`
        batches into epoch `trainer.state.epoch` (0-based); the run ends `interrupted` next."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch (or the one early stopping ended on)."""

    def state_dict(self) -> dict[str, Any]:
        """What this callback must keep across a restart (nothing by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict` returned before the restart."""

    def on_run_end(self, run_dir: RunDir, error: BaseException | None) -> None:
        """After metrics.json is written (`error` None), or after the run failed with `error`."""


def step_row(trainer: Trainer) -> dict[str, Any]:
    """A steps.csv row: epoch (1-based), step, each task's last loss, each group's learning rate."""
    state = trainer.state
    row: dict[str, Any] = {"epoch": state.epoch + 1, "step": state.step}
    row.update({f"train.{name}.loss": value for name, value in trainer.last_losses.items()})
    row.update({f"lr.{name}": lr for name, lr in group_learning_rates(trainer.optimizer).items()})
    return row


class StepLogger(Callback):
    """Per-step losses and learning rates (`logger=csv`), kept in the state and written to steps.csv."""

    def __init__(self, every_steps: int) -> None:
        self.every_steps = every_steps

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.state.step % self.every_steps == 0:
            trainer.state.steps.append(step_row(trainer))


class EarlyStopping(Callback):
    """Tracks the best epoch by a dev metric, and ends training after `patience` epochs without
    improvement (never when `patience` is None); under a `converge` budget the patience is the
    budget's (`trainer.plan.patience`).

    Epochs before the freezing scenario is complete (`trainer.plan.complete_from`: a gradual
    thaw or a late-frozen head still changing what trains) are neither candidates nor counted,
    and training does not stop before the plan's `min_steps`. When no epoch was a candidate
    (a budget spent first), the last one counts as the best.
    """

    def __init__(self, cfg: EarlyStoppingConfig) -> None:
        self.cfg = cfg

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        score = self.score(row)
        state, plan = trainer.state, trainer.plan
        if state.epoch <= plan.complete_from:
            return
        best = state.best_score
        better = best is None or (score > best if self.cfg.mode == "max" else score < best)
        if better:
            state.best_score = float(score)
            state.best_epoch = state.epoch
            state.epochs_without_improvement = 0
        else:
            state.epochs_without_improvement += 1
        patience = plan.patience if plan.name == "converge" else self.cfg.patience
        if patience is not None and state.epochs_without_improvement >= patience \
                and state.step >= plan.min_steps:
            trainer.should_stop = True
            state.stopped_early = True

    def on_fit_end(self, trainer: Trainer) -> None:
        state = trainer.state
        if state.best_score is None and state.history:
            state.best_score = float(self.score(state.history[-1]))
            state.best_epoch = state.epoch

    def score(self, row: dict[str, Any]) -> float:
        score = row.get(self.cfg.metric)
        if score is None:
            raise KeyError(
                f"trainer.early_stopping.metric {self.cfg.metric!r} is not a dev metric; "
                f"choose from {sorted(k for k in row if k.startswith('dev.'))}"
            )
        return score


class Checkpointing(Callback):
    """`last.pt` after every epoch and when a signal stops training mid-epoch (at the step it
    stopped at), `best.pt` when the epoch is the best so far (as set by `EarlyStopping`, which
    must come first); resumes from a `last.pt`, and loads the best weights at the end. Only the
    main process writes. `last.pt` also carries every callback's `state_dict()`."""

    def __init__(self, run_dir: RunDir, context: DistContext, resume_from: RunDir | None = None,
                 fingerprint: dict[str, Any] | None = None) -> None:
        self.run_dir = run_dir
        self.context = context
        self.resume_from = resume_from
        # What a resume must keep (`mtexp.checkpoint.fingerprint`); by default the trainer's run's.
        self.fingerprint = fingerprint

    def on_fit_start(self, trainer: Trainer) -> None:
        barrier(self.context)
        if self.fingerprint is None:
            self.fingerprint = fingerprint(trainer.run)
        source = self.resume_from
        checkpoint = source.read_checkpoint(LAST) if source is not None else None
        if checkpoint is None:
            return
        check_labels(checkpoint.get("labels"), task_labels(trainer))
        trainer.load_state_dict(checkpoint)
        saved = checkpoint.get("callbacks", {})
        for key, callback in callback_keys(trainer.callbacks).items():
            if key in saved:
                callback.load_state_dict(saved[key])
        if source.path != self.run_dir.path and self.context.is_main:
            best = source.read_checkpoint(BEST)
            if best is not None:
                self.run_dir.write_checkpoint(BEST, best)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if not self.context.is_main:
            return
        if trainer.state.best_epoch == trainer.state.epoch:
            self.run_dir.write_checkpoint(BEST, {"model": copy.deepcopy(trainer.model.state_dict())})
        self.save_last(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        if self.context.is_main:
            self.save_last(trainer)

    def save_last(self, trainer: Trainer) -> None:
        payload = {**trainer.state_dict(), "fingerprint": self.fingerprint, "labels": task_labels(trainer)}
        states = {key: state for key, callback in callback_keys(getattr(trainer, "callbacks", ())).items()
                  if (state := callback.state_dict())}
        if states:
            payload["callbacks"] = states
        self.run_dir.write_checkpoint(LAST, payload)

    def on_fit_end(self, trainer: Trainer) -> None:
        barrier(self.context)
        best = self.run_dir.read_checkpoint(BEST)
        if best is not None:
            trainer.model.load_state_dict(best["model"])


def callback_keys(callbacks: Sequence[Callback]) -> dict[str, Callback]:
    """Each callback under a stable key: its class name, with its rank among those of its class."""
    keys: dict[str, Callback] = {}
    for callback in callbacks:
        name = type(callback).__name__
        rank = sum(key.split("#")[0] == name for key in keys)
        keys[f"{name}#{rank}"] = callback
    return keys


def task_labels(trainer: Trainer) -> dict[str, list[str]]:
    """Each task's labels, in the order of the model's outputs."""
    return {task.name: list(task.labels) for task in trainer.runner.data.tasks}


def resume_source(resume: Any, run_dir: RunDir) -> RunDir | None:
    """`trainer.resume`: true resumes from the run's own directory, a path from that directory
    (which must exist: a mistyped path is a `ConfigError`, not a fresh start)."""
    if resume is True or (isinstance(resume, str) and resume.lower() == "true"):
        return run_dir
    if isinstance(resume, str) and resume and resume.lower() != "false":
        source = RunDir(Path(resume))
        if not source.path.is_dir():
            raise ConfigError(f"trainer.resume names a run directory that does not exist: {resume}")
        return run_dir if source.path.resolve() == run_dir.path.resolve() else source
    return None


def default_callbacks(run: RunConfig, run_dir: RunDir, context: DistContext) -> list[Callback]:
    """Step logging when `logger.name` has `csv`, then early stopping, then checkpoints, then the
    experiment trackers it names (on the main process only), then any `extra_callbacks`. A
    tracker connects when it is made: one that cannot be reached raises `TrackerError` here,
    before any data loads."""
    names = logger_names(run.logger.name)
    callbacks: list[Callback] = []
    if "csv" in names:
        callbacks.append(StepLogger(run.logger.every_steps))
    callbacks.append(EarlyStopping(run.trainer.early_stopping))
    callbacks.append(Checkpointing(run_dir, context, resume_source(run.trainer.resume, run_dir)))
    if context.is_main and any(name in TRACKERS for name in names):
        from mtexp.trackers import make_trackers

        callbacks.extend(make_trackers(run, run_dir, names))
    return [*callbacks, *_EXTRA.get()]


# logger.name parts that are experiment trackers (mtexp.trackers), not files of the run directory.
TRACKERS = ("tensorboard", "mlflow")
_EXTRA: ContextVar[tuple[Callback, ...]] = ContextVar("extra_callbacks", default=())


@contextmanager
def extra_callbacks(*callbacks: Callback) -> Iterator[None]:
    """`default_callbacks` ends with `callbacks` for the runs started inside the block."""
    token = _EXTRA.set((*_EXTRA.get(), *callbacks))
    try:
        yield
    finally:
        _EXTRA.reset(token)


@contextmanager
def finishing(callbacks: Sequence[Callback], run_dir: RunDir) -> Iterator[None]:
    """Calls every callback's `on_run_end` after the block: with the error when it raised."""
    try:
        yield
    except BaseException as error:
        for callback in callbacks:
            callback.on_run_end(run_dir, error)
        raise
    for callback in callbacks:
        callback.on_run_end(run_dir, None)
