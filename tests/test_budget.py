"""Training budgets: the plan of each budget, the time-shaped schedule, and runs under each budget
on the tiny backbone (steps, converge, min_steps, time), resumed after a crash."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from mtexp.budget import BudgetClock, BudgetConfig, TimedSchedule, plan_budget
from mtexp.callbacks import Checkpointing
from mtexp.checkpoint import load_checkpoint
from mtexp.config import ConfigError, EarlyStoppingConfig, TrainerConfig, validate
from mtexp.optim import ScheduleConfig
from mtexp.train import CONF_DIR, run

# The sentence split keeps the tiny data set's train split at a known size: 15 batches of 16.
TINY = ["backbone=tiny", "data.size=400", "data.split_by=sentence", "data.holdout_values=false",
        "trainer=quick", "eval.cka_sentences=0", "eval.train_subset=0"]
STEPS_PER_EPOCH = 15


def config(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*TINY, *overrides])


def trainer(**budget) -> TrainerConfig:
    return TrainerConfig(epochs=3, budget=BudgetConfig(**budget),
                         early_stopping=EarlyStoppingConfig(patience=None))


# ----- plans (no training) ----------------------------------------------------------------------
def test_the_default_budget_is_trainer_epochs_with_the_schedule_over_them():
    plan = plan_budget(trainer(), steps_per_epoch=10)
    assert (plan.name, plan.epochs, plan.schedule_steps, plan.step_limit, plan.seconds) == (
        "epochs", 3, 30, None, None)
    assert plan.patience is None and plan.min_steps == 0


def test_min_steps_adds_epochs_until_reached():
    assert plan_budget(trainer(min_steps=45), steps_per_epoch=10).epochs == 5
    assert plan_budget(trainer(min_steps=45), steps_per_epoch=10).schedule_steps == 50
    assert plan_budget(trainer(min_steps=20), steps_per_epoch=10).epochs == 3  # already enough
    converge = plan_budget(trainer(name="converge", max_epochs=4, min_steps=300), steps_per_epoch=5)
    assert (converge.epochs, converge.patience, converge.min_steps) == (60, 3, 300)


def test_a_step_budget_takes_the_epochs_it_needs_and_sets_the_schedule_length():
    plan = plan_budget(trainer(name="steps", steps=25), steps_per_epoch=10)
    assert (plan.epochs, plan.schedule_steps, plan.step_limit) == (3, 25, 25)
    assert plan_budget(trainer(name="steps", steps=25, min_steps=40), 10).step_limit == 40


def test_a_time_budget_is_capped_by_max_epochs():
    plan = plan_budget(trainer(name="time", seconds=60.0, max_epochs=7), steps_per_epoch=10)
    assert (plan.epochs, plan.seconds, plan.step_limit) == (7, 60.0, None)
    clock = BudgetClock(plan, seconds=30.0)
    assert clock.share() == 0.5 and not clock.spent(3)
    clock.seconds = 61.0
    assert clock.spent(3) and not clock.spent(0)  # never before the first step


@pytest.mark.parametrize("overrides, key", [
    (["trainer.budget.name=steps"], "trainer.budget.steps"),
    (["trainer.budget.name=time"], "trainer.budget.seconds"),
    (["trainer.budget.name=forever"], "trainer.budget.name"),
    (["trainer.budget.min_steps=-1"], "trainer.budget.min_steps"),
])
def test_an_impossible_budget_names_its_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(config(*overrides))


def test_the_timed_schedule_follows_the_share_of_the_budget_spent():
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [weight], "lr": 1.0, "base_lr": 1.0}])
    share = {"now": 0.0}
    schedule = TimedSchedule(optimizer, ScheduleConfig("linear", warmup_ratio=0.1), lambda: share["now"])
    assert optimizer.param_groups[0]["lr"] == 0.0  # warm-up starts at 0
    for now, expected in ((0.05, 0.5), (0.55, 0.5), (1.0, 0.0), (2.0, 0.0)):
        share["now"] = now
        schedule.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-3), now
    assert schedule.state_dict()["step_count"] == 4


# ----- runs -------------------------------------------------------------------------------------
def test_a_step_budget_stops_mid_epoch_with_the_schedule_run_out(tmp_path):
    metrics = run(config("trainer.budget.name=steps", "trainer.budget.steps=20", "logger=csv",
                         "logger.every_steps=1"), tmp_path)
    assert metrics["steps"] == 20 and metrics["epochs_run"] == 2
    assert metrics["budget"]["schedule_steps"] == 20 and metrics["budget"]["step_limit"] == 20
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["step"].tolist() == [STEPS_PER_EPOCH, 20]
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert steps["lr.heads.intent"].iloc[-1] == pytest.approx(0.0, abs=1e-12)  # linear decay ended
    assert sum(metrics["data"]["task_steps"].values()) == 2 * 20  # joint data: both tasks each batch


def test_converge_stops_after_patience_and_records_how_it_ended(tmp_path):
    metrics = run(config("trainer.budget.name=converge", "trainer.budget.max_epochs=6",
                         "trainer.budget.patience=1", "optim.lr=1e-12",
                         "trainer.early_stopping.metric=dev.intent.accuracy"), tmp_path)
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] == 1
    assert metrics["stopped_early"] is True and metrics["converged"] is True
    assert metrics["budget"]["name"] == "converge" and metrics["budget"]["epochs"] == 6


def test_a_run_whose_best_epoch_is_its_last_has_not_converged(tmp_path):
    metrics = run(config("trainer.epochs=1"), tmp_path)
    assert metrics["best_epoch"] == metrics["epochs_run"] == 1 and metrics["converged"] is False
    assert metrics["stopped_early"] is False and metrics["steps"] == STEPS_PER_EPOCH


def test_min_steps_holds_off_early_stopping(tmp_path):
    metrics = run(config("trainer.budget.name=converge", "trainer.budget.max_epochs=2",
                         "trainer.budget.patience=1", "trainer.budget.min_steps=50", "optim.lr=1e-12",
                         "trainer.early_stopping.metric=dev.intent.accuracy"), tmp_path)
    assert metrics["budget"]["epochs"] == 4  # 50 steps take 4 epochs of 15
    assert metrics["epochs_run"] == 4 and metrics["steps"] == 60 and metrics["stopped_early"] is True


def test_a_time_budget_ends_when_its_seconds_are_spent(tmp_path):
    metrics = run(config("trainer.budget.name=time", "trainer.budget.seconds=2", "schedule=constant",
                         "trainer.budget.max_epochs=1000"), tmp_path)
    assert metrics["budget"]["seconds"] == 2.0
    assert 0 < metrics["steps"] < 1000 * STEPS_PER_EPOCH
    assert metrics["cost"]["train_seconds"] >= 2.0
    assert metrics["converged"] in (True, False)


@pytest.mark.parametrize("budget", [
    ("trainer.budget.name=steps", "trainer.budget.steps=40"),
    ("trainer.budget.name=converge", "trainer.budget.max_epochs=4", "trainer.budget.patience=1"),
])
def test_a_run_under_a_budget_resumes_to_the_same_metrics(budget, tmp_path, monkeypatch):
    from tests.test_train import without_timing

    reference = run(config(*budget), tmp_path / "reference")
    save_last = Checkpointing.save_last

    def crash_after_first_epoch(self, trainer):
        save_last(self, trainer)
        if trainer.state.epoch == 1:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(Checkpointing, "save_last", crash_after_first_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(config(*budget), tmp_path / "crashed")
    monkeypatch.undo()
    resumed = run(config(*budget, "trainer.resume=true"), tmp_path / "crashed")
    assert without_timing(resumed) == without_timing(reference)


def test_a_resumed_time_budget_counts_the_seconds_already_spent(tmp_path, monkeypatch):
    """The first epoch (60 small batches) outlasts the budget; resumed, the run trains no more."""
    budget = ("trainer.budget.name=time", "trainer.budget.seconds=0.1", "trainer.budget.max_epochs=50",
              "trainer.batch_size=4")
    save_last = Checkpointing.save_last

    def crash_after_first_epoch(self, trainer):
        save_last(self, trainer)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(Checkpointing, "save_last", crash_after_first_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(config(*budget), tmp_path)
    monkeypatch.undo()
    saved = load_checkpoint(tmp_path)["state"]
    assert saved["plan"]["seconds"] == 0.1 and saved["train_seconds"] >= 0.1
    resumed = run(config(*budget, "trainer.resume=true"), tmp_path)
    assert resumed["epochs_run"] == 1 and resumed["steps"] == saved["step"] < 60
