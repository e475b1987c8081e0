"""Training-loop callbacks and the thawing component, without a training run."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from mtexp.budget import BudgetConfig, BudgetPlan, plan_budget
from mtexp.callbacks import (
    Callback,
    Checkpointing,
    EarlyStopping,
    StepLogger,
    default_callbacks,
    extra_callbacks,
    resume_source,
)
from mtexp.config import ConfigError, EarlyStoppingConfig, TrainerConfig
from mtexp.data.types import TaskSpec
from mtexp.distributed import DistContext
from mtexp.freezing import FreezingConfig
from mtexp.model import MultiTaskModel
from mtexp.optim import OptimConfig, ScheduleConfig, group_learning_rates
from mtexp.rundir import LAST, RunDir
from mtexp.thawing import Thawing
from mtexp.trainer import TrainState

TASKS = [TaskSpec("intent", "sequence", ("a", "b")), TaskSpec("slots", "token", ("O", "B-x", "I-x"))]


def fake_trainer(plan: BudgetPlan | None = None, **fields) -> SimpleNamespace:
    plan = plan or BudgetPlan("epochs", epochs=10, schedule_steps=10, steps_per_epoch=1)
    return SimpleNamespace(state=TrainState(), should_stop=False, plan=plan, **fields)


def end_epochs(callback, trainer, scores: list[float]) -> list[bool]:
    """Feed one dev score per epoch; return should_stop after each."""
    stops = []
    for score in scores:
        trainer.state.epoch += 1
        trainer.state.step += trainer.plan.steps_per_epoch
        row = {"dev.score": score, "dev.intent.accuracy": score}
        trainer.state.history.append(row)
        callback.on_epoch_end(trainer, row)
        stops.append(trainer.should_stop)
    return stops


def test_early_stopping_tracks_the_best_epoch_and_stops_after_patience():
    trainer = fake_trainer()
    stops = end_epochs(EarlyStopping(EarlyStoppingConfig(patience=2)), trainer, [0.5, 0.6, 0.6, 0.55])
    assert stops == [False, False, False, True]
    assert trainer.state.best_epoch == 2 and trainer.state.best_score == pytest.approx(0.6)


def test_early_stopping_without_patience_never_stops_and_minimises_on_request():
    trainer = fake_trainer()
    stops = end_epochs(EarlyStopping(EarlyStoppingConfig(mode="min")), trainer, [0.5, 0.4, 0.7, 0.9])
    assert not any(stops)
    assert trainer.state.best_epoch == 2 and trainer.state.epochs_without_improvement == 2


def test_epochs_before_the_scenario_is_complete_are_neither_best_nor_counted():
    plan = BudgetPlan("epochs", epochs=10, schedule_steps=10, steps_per_epoch=1, complete_from=2)
    trainer = fake_trainer(plan)
    stops = end_epochs(EarlyStopping(EarlyStoppingConfig(patience=1)), trainer, [0.9, 0.8, 0.5, 0.4])
    assert stops == [False, False, False, True]
    assert trainer.state.best_epoch == 3 and trainer.state.stopped_early


def test_early_stopping_waits_for_the_minimum_steps():
    plan = BudgetPlan("converge", epochs=10, schedule_steps=100, steps_per_epoch=10, patience=1,
                      min_steps=40)
    trainer = fake_trainer(plan)
    stops = end_epochs(EarlyStopping(EarlyStoppingConfig(patience=1)), trainer, [0.5, 0.4, 0.4, 0.4])
    assert stops == [False, False, False, True]


def test_without_a_candidate_epoch_the_last_one_is_the_best():
    plan = BudgetPlan("time", epochs=10, schedule_steps=10, steps_per_epoch=1, complete_from=5)
    trainer = fake_trainer(plan)
    callback = EarlyStopping(EarlyStoppingConfig())
    end_epochs(callback, trainer, [0.5, 0.7])
    assert trainer.state.best_score is None
    callback.on_fit_end(trainer)
    assert (trainer.state.best_epoch, trainer.state.best_score) == (2, 0.7)


def test_converge_takes_its_patience_from_the_budget():
    plan = plan_budget(TrainerConfig(budget=BudgetConfig("converge", patience=2)), steps_per_epoch=1)
    trainer = fake_trainer(plan)
    stops = end_epochs(EarlyStopping(EarlyStoppingConfig(patience=None)), trainer, [0.5, 0.4, 0.4])
    assert stops == [False, False, True]


def test_early_stopping_names_the_dev_metrics_when_its_metric_is_missing():
    callback = EarlyStopping(EarlyStoppingConfig(metric="dev.slots.f1"))
    with pytest.raises(KeyError, match=r"dev\.intent\.accuracy"):
        end_epochs(callback, fake_trainer(), [0.5])


def test_step_logger_records_every_nth_step_with_losses_and_learning_rates():
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": [weight], "name": "heads.intent", "lr": 0.1}])
    trainer = fake_trainer(optimizer=optimizer, last_losses={"intent": 0.25})
    logger = StepLogger(every_steps=2)
    for _ in range(5):
        trainer.state.step += 1
        logger.on_step_end(trainer)
    assert trainer.state.steps == [
        {"epoch": 1, "step": 2, "train.intent.loss": 0.25, "lr.heads.intent": 0.1},
        {"epoch": 1, "step": 4, "train.intent.loss": 0.25, "lr.heads.intent": 0.1},
    ]


def test_checkpointing_saves_best_only_on_improvement_and_restores_it(tmp_path):
    model = torch.nn.Linear(2, 1)
    run_dir = RunDir(tmp_path)
    tasks = [SimpleNamespace(name="intent", labels=("a", "b"))]
    trainer = fake_trainer(model=model, state_dict=lambda: {"epoch": trainer.state.epoch},
                           runner=SimpleNamespace(data=SimpleNamespace(tasks=tasks)))
    checkpointing = Checkpointing(run_dir, DistContext(), None, {"seed": 0})
    callbacks = [EarlyStopping(EarlyStoppingConfig()), checkpointing]
    for epoch, score in enumerate([0.5, 0.4], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        trainer.state.epoch = epoch
        for callback in callbacks:
            callback.on_epoch_end(trainer, {"dev.score": score})
    # the trainer's state, with what a resume must match: the config's fingerprint and the labels
    assert run_dir.read_checkpoint(LAST) == {"epoch": 2, "fingerprint": {"seed": 0},
                                             "labels": {"intent": ["a", "b"]}}
    callbacks[1].on_fit_end(trainer)
    assert torch.equal(model.weight, torch.ones_like(model.weight))  # epoch 1's weights


def test_resume_source_and_default_callbacks(tmp_path):
    run_dir = RunDir(tmp_path)
    assert resume_source(True, run_dir) is run_dir and resume_source("true", run_dir) is run_dir
    assert resume_source(False, run_dir) is None and resume_source("false", run_dir) is None
    with pytest.raises(ConfigError, match="does not exist"):
        resume_source(str(tmp_path / "other"), run_dir)
    (tmp_path / "other").mkdir()
    assert resume_source(str(tmp_path / "other"), run_dir).path == tmp_path / "other"
    run = SimpleNamespace(logger=SimpleNamespace(name="csv", every_steps=5), trainer=TrainerConfig())
    kinds = [type(c) for c in default_callbacks(run, run_dir, DistContext())]
    assert kinds == [StepLogger, EarlyStopping, Checkpointing]
    extra = Callback()
    with extra_callbacks(extra):
        assert default_callbacks(run, run_dir, DistContext())[-1] is extra
    assert extra not in default_callbacks(run, run_dir, DistContext())


def group_names(optimizer: torch.optim.Optimizer) -> list[str]:
    return [group["name"] for group in optimizer.param_groups]


def test_thawing_replay_lines_up_with_an_uninterrupted_run(tiny_encoder):
    """Resuming at epoch 2 rebuilds the optimizer with the groups, in the order, that epochs 0
    and 1 gave it, so the saved optimizer state loads onto the right parameters."""
    def thawing() -> Thawing:
        model = MultiTaskModel(copy.deepcopy(tiny_encoder), TASKS, head_hidden=8)
        return Thawing(model, FreezingConfig("gradual"), OptimConfig(layer_decay=0.8), ScheduleConfig())

    straight = thawing()
    optimizer, _ = straight.optimizer_at(0, total_steps=10)
    trainable = [straight.start_epoch(optimizer, epoch).params_trainable for epoch in range(2)]
    saved = copy.deepcopy(optimizer.state_dict())  # last.pt after two epochs
    trainable.append(straight.start_epoch(optimizer, 2).params_trainable)
    assert trainable[0] < trainable[1] < trainable[2]

    resumed = thawing()
    replayed, schedule = resumed.optimizer_at(2, total_steps=10)
    replayed.load_state_dict(saved)
    assert resumed.start_epoch(replayed, 2).params_trainable == trainable[2]
    assert group_names(replayed) == group_names(optimizer)
    assert group_learning_rates(replayed) == group_learning_rates(optimizer)
    assert schedule.total_steps == 10
