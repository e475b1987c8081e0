"""Every freezing scenario through the runner: frozen tensors bitwise unchanged, trainable ones moved."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mtexp.checkpoint import load_checkpoint
from mtexp.config import validate
from mtexp.drift import sts_spearman
from mtexp.feature_cache import FeatureCache
from mtexp.freezing import apply_freezing
from mtexp.parts import Part
from mtexp.predict import load_model
from mtexp.scenarios import scenario_names
from mtexp.train import CONF_DIR, build_model, load_data_checked, run

BASE = ["backbone=tiny", "data.size=400", "trainer=quick", "eval.cka_sentences=16", "eval.train_subset=0"]
SCENARIOS = scenario_names(legacy=False)  # every freezing option
SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def config(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*BASE, *overrides])


def initial_state(cfg) -> dict[str, torch.Tensor]:
    settings = validate(cfg)
    model = build_model(settings, load_data_checked(settings))
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def parameter_names(cfg) -> dict[str, Part]:
    settings = validate(cfg)
    return build_model(settings, load_data_checked(settings)).parameter_parts()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_frozen_parameters_are_bitwise_unchanged_and_trainable_ones_move(scenario, tmp_path):
    cfg = config(f"freezing={scenario}", "freezing.k=1" if scenario == "partial" else "freezing.k=0")
    before = initial_state(cfg)
    metrics = run(cfg, tmp_path)
    checkpoint = load_checkpoint(tmp_path)
    after = before if checkpoint is None else checkpoint["model"]
    parts = parameter_names(cfg)
    settings = validate(cfg)
    model = build_model(settings, load_data_checked(settings))
    final_epoch = max(metrics["epochs_run"] - 1, 0)
    freezing = dataclasses.replace(settings.freezing, thaw_epochs=metrics["budget"]["epochs"])
    apply_freezing(model, freezing, final_epoch)
    # per parameter: a scenario may train some of a part's parameters
    trains = {name: param.requires_grad for name, param in model.named_parameters()}
    changed = 0
    for name in parts:
        moved = not torch.equal(before[name], after[name])
        assert moved == trains[name], f"{scenario}: {name} ({parts[name]}) moved={moved}"
        changed += before[name].numel() if moved else 0
    assert metrics["cost"]["params_trainable"] == changed
    if scenario == "all":
        assert changed == 0 and checkpoint is None


def test_the_sweeps_name_registered_scenario_options():
    assert {"none", "all", "backbone", "head_a", "head_b", "gradual", "partial"} <= set(SCENARIOS)
    for preset in ("freezing", "learning_curve"):
        swept = OmegaConf.load(SWEEPS / f"{preset}.yaml").hydra.sweeper.params.freezing
        assert set(swept.split(",")) <= set(SCENARIOS), preset


def test_gradual_unfreezing_logs_the_learning_rate_of_each_thawed_layer(tmp_path):
    run(config("freezing=gradual", "optim=llrd", "schedule=constant", "trainer.epochs=4",
               "freezing.thaw_epochs=0"), tmp_path)  # one layer an epoch, whatever the budget
    history = pd.read_csv(tmp_path / "history.csv")
    lr = 1e-4
    expected = {  # epoch -> layer learning rates present (llrd decay 0.8, 2 layers, constant schedule)
        1: {},
        2: {"lr.encoder.layer_1": lr},
        3: {"lr.encoder.layer_1": lr, "lr.encoder.layer_0": lr * 0.8},
        4: {"lr.encoder.layer_1": lr, "lr.encoder.layer_0": lr * 0.8, "lr.encoder.embeddings": lr * 0.8**2},
    }
    encoder_columns = [c for c in history.columns if c.startswith(("lr.encoder.layer", "lr.encoder.emb"))]
    for _, row in history.iterrows():
        present = {c: row[c] for c in encoder_columns if pd.notna(row[c])}
        assert present.keys() == expected[int(row["epoch"])].keys(), int(row["epoch"])
        for column, value in expected[int(row["epoch"])].items():
            assert present[column] == pytest.approx(value, rel=1e-6)
    assert history["params_trainable"].is_monotonic_increasing
    assert history["params_trainable"].iloc[0] < history["params_trainable"].iloc[-1]


def test_cached_features_give_the_same_metrics_as_the_full_encoder(tmp_path):
    cached = run(config("freezing=backbone", "trainer.feature_cache=true"), tmp_path / "cached")
    full = run(config("freezing=backbone", "trainer.feature_cache=false"), tmp_path / "full")
    assert cached["cost"]["cache_seconds"] > 0 and full["cost"]["cache_seconds"] == 0
    for split in ("dev", "test"):
        assert cached[split]["score"] == pytest.approx(full[split]["score"], abs=1e-3)
    losses_cached = pd.read_csv(tmp_path / "cached" / "history.csv")["train.loss"]
    losses_full = pd.read_csv(tmp_path / "full" / "history.csv")["train.loss"]
    assert (losses_cached - losses_full).abs().max() <= 1e-4
    assert json.loads((tmp_path / "cached" / "metrics.json").read_text())["drift"]["cka"]["mean"] == 1.0


def test_sts_before_and_after_training_is_recorded(tmp_path):
    rows = [
        ("main-captions", "MSRvid", "2012test", f"{i:04d}", f"{score:.1f}", first, second)
        for i, (score, first, second) in enumerate([
            (5.0, "a man is playing a guitar", "a man plays the guitar"),
            (0.2, "a woman is slicing onions", "the stock market fell sharply"),
            (3.8, "a dog runs in the park", "a dog is running on the grass"),
            (1.0, "kids play football outside", "a cat sleeps on the sofa"),
            (4.4, "the plane is taking off", "an airplane is departing"),
            (0.0, "turn on the kitchen lights", "interest rates rose again"),
        ])
    ]
    (tmp_path / "sts-test.csv").write_text("\n".join("\t".join(row) for row in rows) + "\n", encoding="utf-8")
    # lr 3e-3 moves the encoder far enough to change the pairs' ranking (before 0.94, after 0.89),
    # so scores taken from the wrong encoder would show
    metrics = run(config(f"eval.sts_path={tmp_path}", "optim.lr=3e-3"), tmp_path / "run")
    drift = metrics["drift"]
    settings = validate(config(f"eval.sts_path={tmp_path}"))
    untrained = build_model(settings, load_data_checked(settings)).encoder
    trained = load_model(tmp_path / "run").encoder
    assert drift["sts_spearman_before"] == pytest.approx(sts_spearman(untrained, tmp_path), abs=1e-9)
    assert drift["sts_spearman_after"] == pytest.approx(sts_spearman(trained, tmp_path), abs=1e-9)
    frozen = run(config(f"eval.sts_path={tmp_path}", "freezing=backbone"), tmp_path / "frozen")
    assert frozen["drift"]["sts_spearman_after"] == frozen["drift"]["sts_spearman_before"]


def test_bf16_cache_is_encoded_under_autocast_and_stored_in_bf16(tmp_path, monkeypatch):
    calls = []
    build = FeatureCache.build.__func__

    def spy(cls, encoder, batches, device, dtype=torch.float32, **kwargs):
        calls.append((torch.is_autocast_enabled("cpu"), dtype))
        return build(cls, encoder, batches, device, dtype, **kwargs)

    monkeypatch.setattr(FeatureCache, "build", classmethod(spy))
    cached = run(config("freezing=backbone", "trainer.precision=bf16"), tmp_path / "cached")
    assert calls == [(True, torch.bfloat16)]
    full = run(config("freezing=backbone", "trainer.precision=bf16", "trainer.feature_cache=false"),
               tmp_path / "full")
    for split in ("dev", "test"):
        assert cached[split]["score"] == pytest.approx(full[split]["score"], abs=0.02)


def test_the_feature_cache_counts_in_training_memory(tmp_path, monkeypatch):
    ballast_mb = 512  # stands in for a large cache
    counted = FeatureCache.memory_bytes

    def heavy(cache):
        return counted(cache) + ballast_mb * 2**20

    monkeypatch.setattr(FeatureCache, "memory_bytes", heavy)
    metrics = run(config("freezing=backbone"), tmp_path / "run")
    assert metrics["cost"]["train_memory_mb"] >= 0.9 * ballast_mb
    assert metrics["cost"]["cache_memory_mb"] >= ballast_mb


def test_gradual_thaws_the_whole_encoder_within_its_budget(tmp_path):
    metrics = run(config("freezing=gradual", "trainer.epochs=3"), tmp_path)
    history = pd.read_csv(tmp_path / "history.csv")
    trainable = history["params_trainable"].tolist()
    assert trainable[0] < trainable[1] < trainable[2] == metrics["cost"]["params_total"]
    assert "lr.encoder.embeddings" in history.columns and pd.notna(history["lr.encoder.embeddings"].iloc[2])
    assert metrics["budget"]["complete_from"] == 2 and metrics["best_epoch"] == 3


def test_a_head_frozen_after_one_epoch_keeps_its_trained_weights(tmp_path):
    """The head trains jointly in epoch 1 (as under `none`, on a constant schedule), then stays."""
    common = ("schedule=constant", "freezing.head=A")
    run(config("freezing=none", "trainer.epochs=1", *common), tmp_path / "joint")
    metrics = run(config("freezing=head_a", "freezing.after_epochs=1", "trainer.epochs=3", *common),
                  tmp_path / "late")
    joint, late = load_checkpoint(tmp_path / "joint")["model"], load_checkpoint(tmp_path / "late")["model"]
    initial = initial_state(config("freezing=head_a", *common))
    head = [name for name in joint if name.startswith("heads.intent.")]
    assert head and all(torch.equal(joint[name], late[name]) for name in head)
    assert not all(torch.equal(initial[name], late[name]) for name in head)  # a trained head
    assert not torch.equal(joint["heads.slots.1.weight"], late["heads.slots.1.weight"])
    trainable = pd.read_csv(tmp_path / "late" / "history.csv")["params_trainable"].tolist()
    assert trainable[0] > trainable[1] == trainable[2] == metrics["cost"]["params_trainable"]
    assert metrics["budget"]["complete_from"] == 1 and metrics["best_epoch"] >= 2
