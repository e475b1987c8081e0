"""Experiment trackers on the tiny backbone, read back with the trackers' own readers: TensorBoard's
EventAccumulator on the event files, MlflowClient on the SQLite store."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import require_module
from hydra import compose, initialize_config_dir

from mtexp.callbacks import Checkpointing, EarlyStopping, StepLogger, default_callbacks
from mtexp.config import ConfigError, EarlyStoppingConfig, LoggerConfig, validate
from mtexp.distributed import DistContext
from mtexp.rundir import TENSORBOARD_DIR, RunDir, flatten
from mtexp.trackers import TensorBoardTracker, TrackerError
from mtexp.train import CONF_DIR, run

REPO = Path(__file__).resolve().parents[1]
TINY = ("backbone=tiny", "data.size=400", "trainer=quick", "eval.cka_sentences=16", "eval.train_subset=0")
CHOICES = {"backbone": "tiny", "data": "builtin", "freezing": "none", "optim": "adamw",
           "schedule": "linear", "trainer": "quick", "logger": "mlflow"}
UNREACHABLE = "http://127.0.0.1:9"


def tiny_config(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*TINY, *overrides])


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


def train(run_dir: Path, database: Path, *overrides: str) -> dict:
    """One tiny run that logs to csv, TensorBoard and MLflow (every 4th step)."""
    cfg = tiny_config("logger=mlflow", "logger.name=csv+tensorboard+mlflow", "logger.every_steps=4",
                      f"logger.tracking_uri={sqlite_uri(database)}", *overrides)
    return run(cfg, run_dir, CHOICES, list(overrides))


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> SimpleNamespace:
    require_module("tensorboard")
    require_module("mlflow")
    root = tmp_path_factory.mktemp("tracked")
    run_dir = root / "run"
    metrics = train(run_dir, root / "mlflow.db")
    return SimpleNamespace(
        run_dir=run_dir, database=root / "mlflow.db", metrics=metrics,
        history=pd.read_csv(run_dir / "history.csv"), steps=pd.read_csv(run_dir / "steps.csv"),
        config=flatten(yaml.safe_load((run_dir / "config.yaml").read_text())),
    )


def columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("epoch", "step")]


def assert_series(points: list[tuple[int, float]], frame: pd.DataFrame, axis: str, column: str,
                  rel: float = 1e-6) -> None:
    """`points` (step, value) are the rows of `frame` where `column` has a value."""
    rows = frame[frame[column].notna()]
    assert [step for step, _ in points] == rows[axis].astype(int).tolist(), column
    assert [value for _, value in points] == pytest.approx(rows[column].tolist(), rel=rel), column


# ----- TensorBoard --------------------------------------------------------------------------------
def event_accumulator(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    return events


def test_tensorboard_scalars_equal_history_and_steps(tracked):
    events = event_accumulator(tracked.run_dir)
    tags = set(events.Tags()["scalars"])
    for column in columns(tracked.history):
        points = [(e.step, e.value) for e in events.Scalars(f"epoch/{column}")]
        assert_series(points, tracked.history, "epoch", column)  # float32 in the event file
    for column in columns(tracked.steps):
        points = [(e.step, e.value) for e in events.Scalars(f"step/{column}")]
        assert_series(points, tracked.steps, "step", column)
    assert tracked.steps["step"].tolist() == list(range(4, int(tracked.history["step"].max()) + 1, 4))
    groups = {c for c in tracked.history.columns if c.startswith("lr.")}
    assert len(groups) >= 3 and {f"epoch/{g}" for g in groups} <= tags
    assert {f"step/{g}" for g in groups} <= tags and "epoch/params_trainable" in tags
    final = events.Scalars("final/test.score")
    assert [(e.step, e.value) for e in final] == [
        (tracked.metrics["epochs_run"], pytest.approx(tracked.metrics["test"]["score"], rel=1e-6))]


def test_tensorboard_hparams_hold_the_resolved_config(tracked):
    from tensorboard.plugins.hparams import api_pb2, metadata

    content = event_accumulator(tracked.run_dir).PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    logged = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}
    expected = {key: "None" if value is None else value for key, value in tracked.config.items()}
    assert logged == pytest.approx(expected)
    assert logged["logger.name"] == "csv+tensorboard+mlflow" and logged["backbone.random_init"] is True


# ----- MLflow -------------------------------------------------------------------------------------
def mlflow_runs(database: Path) -> tuple[Any, list]:
    """The client of the SQLite store `database`, and the runs of its `mtexp` experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(sqlite_uri(database))
    experiment = client.get_experiment_by_name("mtexp")
    return client, client.search_runs([experiment.experiment_id])


def test_mlflow_params_tags_and_artifacts(tracked):
    client, runs = mlflow_runs(tracked.database)
    assert len(runs) == 1
    logged = runs[0]
    assert logged.info.run_name == tracked.run_dir.name and logged.info.status == "FINISHED"
    assert logged.data.params == {key: str(value) for key, value in tracked.config.items()}
    tags = logged.data.tags
    assert {k: tags[k] for k in CHOICES} == CHOICES and tags["seed"] == "0"
    env = json.loads((tracked.run_dir / "env.json").read_text())
    assert tags.get("git_revision") == env["git_revision"]
    assert "mlflow.parentRunId" not in tags  # a single run has no parent
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"metrics.json", "history.csv", "steps.csv"} <= artifacts


def test_mlflow_metrics_per_step_per_epoch_and_final(tracked):
    client, runs = mlflow_runs(tracked.database)
    run_id = runs[0].info.run_id

    def history(key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

    for column in columns(tracked.history):
        assert_series(history(f"epoch/{column}"), tracked.history, "epoch", column, rel=1e-12)
    for column in columns(tracked.steps):
        assert_series(history(f"step/{column}"), tracked.steps, "step", column, rel=1e-12)
    final = {k: v for k, v in flatten(tracked.metrics, scalars_only=True).items()
             if v is not None and not isinstance(v, bool)}
    logged = {k.removeprefix("final/"): v for k, v in runs[0].data.metrics.items() if k.startswith("final/")}
    assert logged.keys() == final.keys()
    assert all(math.isclose(logged[k], final[k], rel_tol=1e-12) for k in final)
    assert history("final/test.score") == [(tracked.metrics["epochs_run"], final["test.score"])]


def test_resumed_run_continues_its_tracked_runs(tmp_path, monkeypatch):
    """A run resumed from its own checkpoint logs into the same MLflow run, and its event files
    read as one series per tag."""
    require_module("tensorboard")
    require_module("mlflow")
    from mtexp.trainer import Trainer

    run_dir, database = tmp_path / "run", tmp_path / "mlflow.db"
    train_epoch = Trainer.train_epoch

    def crash_before_the_third_epoch(self, epoch):
        if epoch == 2:  # every callback has seen epoch 2, and last.pt holds it
            raise RuntimeError("simulated crash")
        train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", crash_before_the_third_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(run_dir, database, "trainer.epochs=3")
    monkeypatch.undo()
    train(run_dir, database, "trainer.epochs=3", "trainer.resume=true")
    client, runs = mlflow_runs(database)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    epochs = [m.step for m in client.get_metric_history(runs[0].info.run_id, "epoch/dev.score")]
    assert epochs == [1, 2, 3]
    events = event_accumulator(run_dir)
    assert [e.step for e in events.Scalars("epoch/dev.score")] == [1, 2, 3]
    steps = [e.step for e in events.Scalars("step/train.intent.loss")]
    assert steps == sorted(set(steps)) and steps == pd.read_csv(run_dir / "steps.csv")["step"].tolist()


# ----- failing at the start -----------------------------------------------------------------------
def assert_failed_before_training(run_dir: Path) -> None:
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "TrackerError" in status["error"]
    assert not (run_dir / "history.csv").exists() and not (run_dir / "labels.json").exists()


def test_unreachable_tracking_uri_fails_within_seconds_before_any_data(tmp_path, monkeypatch):
    require_module("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_config("logger=mlflow", f"logger.tracking_uri={UNREACHABLE}")
    started = time.perf_counter()
    with pytest.raises(TrackerError, match=r"127\.0\.0\.1:9 \(set by logger\.tracking_uri\)"):
        run(cfg, tmp_path / "run")
    assert time.perf_counter() - started < 20
    assert_failed_before_training(tmp_path / "run")


def test_unreachable_environment_uri_is_named(tmp_path, monkeypatch):
    require_module("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", UNREACHABLE)
    with pytest.raises(TrackerError, match=r"127\.0\.0\.1:9 \(set by MLFLOW_TRACKING_URI\)"):
        run(tiny_config("logger=mlflow"), tmp_path / "run")
    assert_failed_before_training(tmp_path / "run")


@pytest.mark.parametrize(("logger", "module"), [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_missing_package_fails_at_start_with_the_pip_command(tmp_path, monkeypatch, logger, module):
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package makes `import` raise
    with pytest.raises(TrackerError, match=rf"logger={logger} needs .*pip install 'mtexp\[trackers\]'"):
        run(tiny_config(f"logger={logger}"), tmp_path / "run")
    assert_failed_before_training(tmp_path / "run")


# ----- choosing trackers --------------------------------------------------------------------------
def test_logger_name_takes_several_parts_joined_by_plus():
    assert LoggerConfig(name="csv+mlflow").name == "csv+mlflow"
    for bad in ("csv+nope", "none+csv", "", "wandb"):
        with pytest.raises(ConfigError, match=r"logger\.name"):
            LoggerConfig(name=bad)


def test_default_callbacks_add_trackers_on_the_main_process_only(tmp_path):
    require_module("tensorboard")
    run_config = validate(tiny_config("logger=tensorboard", "logger.name=csv+tensorboard"))
    run_dir = RunDir(tmp_path)
    main = [type(c) for c in default_callbacks(run_config, run_dir, DistContext())]
    other = [type(c) for c in default_callbacks(run_config, run_dir, DistContext(rank=1, world_size=2))]
    assert main == [StepLogger, EarlyStopping, Checkpointing, TensorBoardTracker]
    assert other == [StepLogger, EarlyStopping, Checkpointing]
    plain = SimpleNamespace(logger=SimpleNamespace(name="tensorboard", every_steps=5), seed=0,
                            trainer=SimpleNamespace(early_stopping=EarlyStoppingConfig(), resume=False))
    assert StepLogger not in [type(c) for c in default_callbacks(plain, run_dir, DistContext())]


# ----- a sweep ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_parallel_sweep_nests_its_jobs_under_one_parent_run(tmp_path):
    """`mtexp-train -m seed=0,1` with two joblib jobs at once, started in tmp_path: one SQLite file
    at the output root holds one parent run for the sweep and the two jobs nested under it."""
    require_module("mlflow")
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    sweep = tmp_path / "multirun" / "sweep"
    command = [sys.executable, "-m", "mtexp.train", "-m", "+experiment=local_parallel", *TINY,
               "logger=mlflow", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "mlflow.db").is_file()
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.run_name == "multirun/sweep" and parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.info.run_name for r in children) == ["0_seed0", "1_seed1"]
    assert sorted(r.data.tags["seed"] for r in children) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and "final/test.score" in r.data.metrics for r in children)
