"""Tuning on dev with Optuna: the search space, a study that completes, resumes after an
interruption and prunes, the tuning record, and confirm runs with the best learning rates."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from mtexp.config import validate
from mtexp.train import CONF_DIR
from tests.conftest import require_module

optuna = require_module("optuna")

from mtexp import tune  # noqa: E402  (needs optuna)

TINY = ["backbone=tiny", "data.size=400", "data.unseen_label=fallback", "trainer=quick", "trainer.epochs=2",
        "eval.cka_sentences=0", "eval.train_subset=0"]


def tune_config(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("tune", overrides=[*TINY, *overrides])


def run_config(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


def tuning(folder: Path, *overrides: str) -> tune.Tuning:
    return tune.Tuning(tune_config(*overrides), folder / "config", folder, {"freezing": "none"},
                       [*TINY, *overrides], config_name="tune")


def test_the_search_space_follows_the_scenario_and_the_optimizer_preset():
    space = tune.search_space
    assert space(run_config()) == {"optim.lr": tune.LogRange(1e-5, 1e-3)}
    assert space(run_config("optim=llrd")) == {"optim.lr": tune.LogRange(1e-5, 1e-3)}  # decay kept
    assert space(run_config("freezing=backbone")) == {"optim.lr_head": tune.LogRange(1e-4, 1e-1)}
    assert space(run_config("freezing=all")) == {}
    assert space(run_config("optim=split")) == {
        "optim.lr_encoder": tune.LogRange(1e-5, 1e-3), "optim.lr_head": tune.LogRange(1e-5, 1e-2)}
    assert space(run_config("optim=per_task_heads")) == {
        "optim.lr_encoder": tune.LogRange(1e-5, 1e-3),
        "optim.lr_heads.A": tune.LogRange(1e-5, 1e-2), "optim.lr_heads.B": tune.LogRange(1e-5, 1e-2)}
    assert tune.parameter_overrides({"optim.lr": 0.1}) == {
        "optim.lr": 0.1, "optim.lr_encoder": 0.1, "optim.lr_head": 0.1}


def test_the_study_is_named_after_the_configuration():
    overrides = ["seed=3", "freezing=backbone", "data=snips", "trainer.threads=2", "tune.trials=4",
                 "+experiment=local_parallel", "hydra.sweep.dir=x"]
    assert tune.study_name("tune_freezing", overrides) == "tune_freezing: data=snips freezing=backbone"
    assert tune.study_name("tune", []) == "tune: defaults"


def test_a_study_resumes_after_an_interruption_then_confirms_the_best(tmp_path, monkeypatch, caplog):
    overrides = ("tune.trials=3", "tune.seeds=[0,1,2]", "tune.pruner=none")
    train = tune.Tuning.train
    calls = {"n": 0}

    def interrupted(self, run_dir, params, seed, resume=False, own_process=False):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the worker dies during its second trial
        return train(self, run_dir, params, seed, resume, own_process)

    monkeypatch.setattr(tune.Tuning, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tuning(tmp_path, *overrides)()
    monkeypatch.undo()
    first = optuna.load_study(study_name=tuning(tmp_path, *overrides).name,
                              storage=f"sqlite:///{tmp_path / 'tuning.db'}")
    kept = [t for t in first.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(kept) == 1  # the storage file kept the finished trial

    with caplog.at_level(logging.INFO):  # the confirm runs, each in a process of its own, log as this one
        record = tuning(tmp_path, *overrides)()
    study = optuna.load_study(study_name=record["study"], storage=f"sqlite:///{tmp_path / 'tuning.db'}")
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(completed) == 3 and completed[0].params == kept[0].params  # carried on, not restarted
    on_disk = json.loads((tmp_path / "config" / "tuning.json").read_text())
    assert on_disk == json.loads(json.dumps(record))
    assert (record["trials"], record["pruned"], record["failed"]) == (3, 0, 1)
    assert record["best"] == study.best_params and record["best_dev_score"] == study.best_value
    assert record["search_space"] == {"optim.lr": {"low": 1e-5, "high": 1e-3, "log": True}}
    assert record["seconds"] > 0 and record["configuration"]["backbone"] == "tiny"
    assert record["confirm"]["runs"] == ["seed0", "seed1", "seed2"]
    best_lr = record["best"]["optim.lr"]
    for seed in (0, 1, 2):
        run_dir = tmp_path / "config" / f"seed{seed}"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["seed"] == seed
        assert config["optim"]["lr_encoder"] == config["optim"]["lr_head"] == pytest.approx(best_lr)
        assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
        assert f"seed={seed}" in yaml.safe_load((run_dir / "overrides.yaml").read_text())
        assert "[INFO] - epoch 0:" in (run_dir / "train.log").read_text()
    trial_seed = yaml.safe_load((tmp_path / "config" / "trials" / "0" / "config.yaml").read_text())["seed"]
    assert trial_seed == record["tuning_seed"] not in (0, 1, 2)
    assert tune.confirm_runs(tmp_path) == [tmp_path / "config" / f"seed{s}" for s in (0, 1, 2)]


def test_a_trailing_trial_is_pruned_and_marked(tmp_path, caplog):
    overrides = ("tune.trials=2", "tune.stage=search", "tune.study=pruning", "tune.pruner_startup_trials=1",
                 "tune.pruner_warmup_epochs=0")
    study = optuna.create_study(study_name="pruning", storage=f"sqlite:///{tmp_path / 'tuning.db'}",
                                direction="maximize")
    study.enqueue_trial({"optim.lr": 1e-3})
    study.enqueue_trial({"optim.lr": 1e-5})  # barely moves the random tiny model in one epoch
    with caplog.at_level(logging.INFO, logger="mtexp.run"):
        record = tuning(tmp_path, *overrides)()
    assert (record["trials"], record["pruned"]) == (2, 1) and record["best"] == {"optim.lr": 1e-3}
    ending = [r for r in caplog.records if r.name == "mtexp.run" and r.getMessage().startswith("run ")]
    assert [(r.levelno, r.getMessage().split(":")[0]) for r in ending] == [(logging.INFO, "run pruned")]
    assert "confirm" not in record and not (tmp_path / "config" / "seed0").exists()
    status = json.loads((tmp_path / "config" / "trials" / "1" / "status.json").read_text())
    assert status["status"] == tune.PRUNED and status["error"].startswith("TrialPruned: pruned after epoch")
    assert not (tmp_path / "config" / "trials" / "1" / "metrics.json").exists()
    for trial in (tmp_path / "config" / "trials").iterdir():  # records only, no weights
        assert not (trial / "model.safetensors").exists() and not (trial / "checkpoints").exists()
    assert json.loads((tmp_path / "config" / "trials" / "0" / "status.json").read_text())["status"] == \
        "completed"


def test_a_scenario_that_trains_nothing_is_not_tuned(tmp_path):
    record = tuning(tmp_path, "freezing=all", "tune.seeds=[0]", "tune.own_process=false")()
    assert (record["trials"], record["best"], record["study"], record["search_space"]) == (0, {}, None, {})
    assert record["confirm"]["runs"] == ["seed0"]
    assert not (tmp_path / "tuning.db").exists()
