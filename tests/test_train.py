"""The runner end to end on the tiny backbone: run directory, reproducibility, failure, resume."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from safetensors import safe_open

from mtexp.data import DataError
from mtexp.train import CONF_DIR, run

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "backbone=tiny",
    "data.size=400",
    "trainer=quick",
    "eval.cka_sentences=16",
    "eval.train_subset=32",
]
TIMING_KEYS = {
    "train_seconds", "cache_seconds", "seconds_per_epoch", "train_samples_per_second",
    "peak_memory_mb", "train_memory_mb",
}


def tiny_config(*overrides: str, base: tuple[str, ...] = tuple(TINY)):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


def without_timing(metrics: dict) -> dict:
    """Metrics minus wall-clock fields and whether the feature cache was already there."""
    cost = {k: v for k, v in metrics["cost"].items() if k not in TIMING_KEYS}
    data = {k: v for k, v in metrics["data"].items() if k != "cache"}
    return {**metrics, "cost": cost, "data": data}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run")
    metrics = run(tiny_config(), run_dir, {"backbone": "tiny", "freezing": "none"}, TINY)
    return run_dir, metrics


def test_run_directory_holds_the_contract_files(tiny_run):
    run_dir, metrics = tiny_run
    for name in ("config.yaml", "choices.yaml", "overrides.yaml", "metrics.json", "history.csv",
                 "status.json", "env.json", "labels.json", "model.safetensors", "checkpoints/last.pt"):
        assert (run_dir / name).is_file(), name
    assert "${" not in (run_dir / "config.yaml").read_text()
    assert yaml.safe_load((run_dir / "choices.yaml").read_text())["backbone"] == "tiny"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    env = json.loads((run_dir / "env.json").read_text())
    assert {"python", "torch", "transformers", "hydra", "git_revision", "device", "threads"} <= set(env)
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))


def test_metrics_have_every_task_split_and_cost(tiny_run):
    _, metrics = tiny_run
    for split in ("dev", "test"):
        assert {"accuracy", "macro_f1"} <= set(metrics[split]["intent"])
        assert {"precision", "recall", "f1", "per_entity"} <= set(metrics[split]["slots"])
    assert 0.0 <= metrics["test"]["joint"]["sentence_accuracy"] <= 1.0
    cost = metrics["cost"]
    assert cost["params_trainable"] == cost["params_total"] > 0
    assert cost["train_seconds"] > 0 and cost["train_samples_per_second"] > 0 and cost["peak_memory_mb"] > 0
    assert metrics["seed"] == 0 and metrics["best_epoch"] in (1, 2)
    assert set(metrics["drift"]["cka"]) == {"layer_0", "layer_1", "layer_2", "mean"}


def test_history_has_one_row_per_epoch_with_losses_and_learning_rates(tiny_run):
    run_dir, _ = tiny_run
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    for column in ("train.intent.loss", "train.slots.loss", "dev.intent.accuracy", "dev.slots.f1",
                   "params_trainable", "seconds", "lr.heads.intent", "lr.encoder.layer_1"):
        assert column in history.columns, column


def test_model_tensors_use_the_backbone_names_under_encoder(tiny_run):
    run_dir, _ = tiny_run
    with safe_open(run_dir / "model.safetensors", framework="pt") as weights:
        names = set(weights.keys())
    assert "encoder.embeddings.word_embeddings.weight" in names
    assert "encoder.encoder.layer.1.output.dense.weight" in names
    assert any(name.startswith("heads.slots.") for name in names)
    assert not any(name.startswith("encoder.backbone.") for name in names)


def test_same_config_and_seed_give_the_same_metrics(tiny_run, tmp_path):
    _, first = tiny_run
    second = run(tiny_config(), tmp_path)
    assert without_timing(second) == without_timing(json.loads(json.dumps(first)))


def test_a_failed_run_says_why(tmp_path):
    with pytest.raises(DataError):
        config = tiny_config("data=snips", f"data.path={tmp_path / 'missing'}", base=("backbone=tiny",))
        run(config, tmp_path / "run")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed"
    assert "DataError" in status["error"] and "Traceback" in status["traceback"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_freezing_all_trains_nothing_and_reports_the_untrained_model(tmp_path):
    metrics = run(tiny_config("freezing=all"), tmp_path)
    assert metrics["cost"]["params_trainable"] == 0
    assert metrics["cost"]["train_seconds"] == 0  # no training, and no feature cache to build for it
    assert metrics["best_epoch"] == 0
    assert metrics["drift"]["cka"]["mean"] == pytest.approx(1.0)
    assert pd.read_csv(tmp_path / "history.csv")["epoch"].tolist() == [0]


def test_early_stopping_ends_a_run_that_stops_improving(tmp_path):
    metrics = run(
        tiny_config("trainer.epochs=6", "trainer.early_stopping.patience=1", "optim.lr=1e-12",
                    "trainer.early_stopping.metric=dev.intent.accuracy"),
        tmp_path,
    )
    assert metrics["epochs_run"] == 2
    assert metrics["best_epoch"] == 1


def test_a_killed_run_resumes_to_the_same_metrics(tmp_path, train_cli):
    cli = train_cli([*TINY, "trainer.epochs=3", "data.size=800"])
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    cli.run(reference_dir)
    checkpoint = killed_dir / "checkpoints" / "last.pt"
    assert cli.signal_when(cli.start(killed_dir), checkpoint.exists) == -signal.SIGKILL
    assert not (killed_dir / "metrics.json").exists()
    cli.run(killed_dir, "trainer.resume=true")
    reference = json.loads((reference_dir / "metrics.json").read_text())
    resumed = json.loads((killed_dir / "metrics.json").read_text())
    assert without_timing(resumed) == without_timing(reference)


def test_disjoint_tasks_train_from_their_own_corpora(tmp_path):
    from tests.test_data_sampling import write_disjoint

    table, conll = write_disjoint(tmp_path)
    config = tiny_config(
        "data=disjoint_example", f"data.sources.0.path={table}", f"data.sources.1.path={conll}",
        "data.sampling.strategy=round_robin", base=("backbone=tiny", "trainer=quick", "eval.train_subset=20"),
    )
    metrics = run(config, tmp_path / "run")
    assert set(metrics["test"]) == {"sentiment", "ner", "score"}
    steps = metrics["data"]["task_steps"]
    assert abs(steps["sentiment"] - steps["ner"]) <= metrics["epochs_run"]  # round robin: one each in turn
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history[["train.sentiment.loss", "train.ner.loss"]].notna().all().all()


def test_gradient_accumulation_takes_one_step_per_group_of_batches(tmp_path):
    plain = run(tiny_config("trainer.epochs=1", "trainer.batch_size=16"), tmp_path / "plain")
    accumulated = run(tiny_config("trainer.epochs=1", "trainer.batch_size=16", "trainer.grad_accumulation=3"),
                      tmp_path / "accumulated")
    batches = pd.read_csv(tmp_path / "plain" / "history.csv")["step"].iloc[-1]
    steps = pd.read_csv(tmp_path / "accumulated" / "history.csv")["step"].iloc[-1]
    assert steps == -(-batches // 3)
    assert plain["cost"]["train_samples_per_second"] > 0 and accumulated["test"]["score"] >= 0


def test_bf16_autocast_trains_and_scores(tmp_path):
    metrics = run(tiny_config("trainer.precision=bf16", "trainer.epochs=1"), tmp_path)
    assert metrics["status"] == "completed"
    assert 0.0 <= metrics["test"]["intent"]["accuracy"] <= 1.0
    assert pd.read_csv(tmp_path / "history.csv")["train.loss"].notna().all()


def test_gradual_unfreezing_with_layer_decay_resumes_after_a_crash(tmp_path, monkeypatch):
    """Resuming rebuilds the optimizer as it stood, thawed layer groups included."""
    from mtexp.callbacks import Checkpointing

    overrides = ("freezing=gradual", "optim=llrd", "trainer.epochs=3")
    reference = run(tiny_config(*overrides), tmp_path / "reference")
    save_last = Checkpointing.save_last

    def crash_after_second_epoch(self, trainer):
        save_last(self, trainer)
        if trainer.state.epoch == 2:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(Checkpointing, "save_last", crash_after_second_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tiny_config(*overrides), tmp_path / "crashed")
    monkeypatch.undo()
    resumed = run(tiny_config(*overrides, "trainer.resume=true"), tmp_path / "crashed")
    assert without_timing(resumed) == without_timing(reference)
