"""load_runs / load_histories / summarize on synthetic run directories that follow the SPEC contract."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mtexp.report import summary_tables
from mtexp.results import (
    RunLoadWarning,
    add_derived,
    completed_mask,
    default_metrics,
    find_run_dirs,
    load_histories,
    load_runs,
    load_steps,
    mean_ci,
    summarize,
    varying_columns,
)

SEEDS = (0, 1, 2)
# (intent accuracy, slot f1, params_trainable, seconds_per_epoch, peak MB, CKA mean, STS after)
SCENARIOS: dict[str, tuple[float, float, int, float, float, float, float]] = {
    "none": (0.97, 0.92, 22_713_216, 100.0, 900.0, 0.85, 0.70),
    "all": (0.14, 0.02, 0, 15.0, 350.0, 1.0, 0.82),
    "backbone": (0.90, 0.60, 5_390, 20.0, 400.0, 1.0, 0.82),
    "gradual": (0.968, 0.918, 22_713_216, 80.0, 850.0, 0.93, 0.78),
}
NOISE = (0.004, -0.002, 0.001)


def metrics_doc(freezing: str, seed: int, fraction: float = 1.0) -> dict[str, Any]:
    acc, f1, trainable, spe, mem, cka, sts = SCENARIOS[freezing]
    acc, f1 = acc * (0.85 if fraction < 1 else 1.0) + NOISE[seed], f1 + NOISE[seed] / 2
    layers = {f"layer_{i}": min(1.0, cka + 0.05 * (1 - i)) for i in range(3)}
    task_scores = {"intent": {"accuracy": acc, "macro_f1": acc - 0.01},
                   "slots": {"precision": f1, "recall": f1, "f1": f1, "per_entity": {"artist": f1}}}
    return {
        "status": "completed", "seed": seed, "best_epoch": 3,
        "dev": task_scores,
        "test": {**task_scores, "joint": {"sentence_accuracy": acc * f1}},
        "cost": {"params_total": 22_713_216 + 5_390, "params_trainable": trainable,
                 "train_seconds": 3 * spe + seed, "seconds_per_epoch": spe + seed,
                 "train_samples_per_second": 13084 / (spe + seed), "peak_memory_mb": mem},
        "drift": {"cka": {**layers, "mean": sum(layers.values()) / 3},
                  "sts_spearman_before": 0.82, "sts_spearman_after": sts + NOISE[seed]},
        "convergence": {"epochs_to_95pct": 1 + seed % 2, "best_epoch": 3,
                        "overfit_gap": 0.03 if freezing == "none" else 0.01},
        "data": {"train": int(13084 * fraction)},
    }


def write_run(run: Path, freezing: str, seed: int, status: str = "completed",
              metrics: dict | str | None = None, fraction: float = 1.0) -> Path:
    """A run directory as mtexp/train.py leaves it (no model files)."""
    (run / ".hydra").mkdir(parents=True)
    choices = {"backbone": "minilm_l6", "data": "snips", "freezing": freezing, "optim": "adamw",
               "schedule": "linear", "trainer": "default", "hydra/launcher": "basic"}
    overrides = [f"freezing={freezing}", f"seed={seed}"]
    if fraction < 1:
        overrides.append(f"data.train_fraction={fraction}")
    config = {"seed": seed, "data": {"name": "snips", "train_fraction": fraction},
              "freezing": {"name": freezing}, "optim": {"lr_encoder": 2e-5, "lr_head": 2e-5},
              "trainer": {"epochs": 3}}
    (run / "choices.yaml").write_text(yaml.safe_dump(choices))
    (run / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    error = "RuntimeError: CUDA out of memory" if status == "failed" else None
    (run / "status.json").write_text(json.dumps(
        {"status": status, "started": "2025-01-01T00:00:00", "ended": None, "error": error,
         "traceback": error}))
    if isinstance(metrics, str):
        (run / "metrics.json").write_text(metrics)
    elif status == "completed":
        (run / "metrics.json").write_text(json.dumps(metrics or metrics_doc(freezing, seed, fraction)))
    if status != "failed":
        acc = SCENARIOS[freezing][0] + NOISE[seed % 3]
        hist = pd.DataFrame({
            "epoch": [1, 2, 3], "step": [100, 200, 300], "seconds": [10.0, 20.0, 30.0],
            "params_trainable": SCENARIOS[freezing][2], "train.loss": [1.5, 0.6, 0.4],
            "train.intent.loss": [0.8, 0.3, 0.2], "dev.intent.accuracy": [acc - 0.1, acc - 0.02, acc],
            "dev.slots.f1": [0.5, 0.8, 0.9], "lr.encoder": [2e-5, 1e-5, 0.0],
        })
        hist.to_csv(run / "history.csv", index=False)
    return run


def write_sweep(root: Path, fractions: tuple[float, ...] = (1.0,)) -> Path:
    """freezing in {none, all, backbone, gradual} x 3 seeds, plus a failed, a running and a
    corrupt run; more train fractions when asked (learning curve)."""
    job = 0
    for fraction in fractions:
        for freezing in SCENARIOS:
            for seed in SEEDS:
                write_run(root / f"{job}_seed{seed}", freezing, seed, fraction=fraction)
                job += 1
    write_run(root / f"{job}_seed3", "backbone", 3, status="failed")
    write_run(root / f"{job + 1}_seed4", "none", 4, status="running")
    write_run(root / f"{job + 2}_seed5", "gradual", 5, metrics='{"status": "completed", "te')
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    return write_sweep(tmp_path / "multirun" / "freezing")


def test_find_run_dirs_stops_at_runs(sweep: Path) -> None:
    runs = find_run_dirs(sweep.parent)
    assert len(runs) == 15
    assert all(not p.name.startswith(".") for p in runs)
    with pytest.raises(FileNotFoundError):
        find_run_dirs(sweep / "nope")


def test_load_runs_rows_statuses_and_problems(sweep: Path) -> None:
    with pytest.warns(RunLoadWarning, match="metrics.json"):
        df = load_runs(sweep)
    assert len(df) == 15
    assert df["status"].value_counts().to_dict() == {"completed": 13, "failed": 1, "running": 1}
    failed = df[df["status"] == "failed"].iloc[0]
    assert "out of memory" in failed["error"] and failed["freezing"] == "backbone"
    corrupt = df[df["problems"].str.contains("metrics.json")]
    assert len(corrupt) == 1 and corrupt.iloc[0]["seed"] == 5
    assert not corrupt.iloc[0]["has_metrics"]
    assert int(completed_mask(df).sum()) == 12
    assert "hydra/launcher" not in df.columns
    for col in ("freezing", "optim", "backbone", "seed", "run_dir", "overrides",
                "test.intent.accuracy", "test.slots.per_entity.artist", "cost.params_trainable",
                "drift.cka.mean", "drift.sts_spearman_change", "convergence.epochs_to_95pct",
                "cfg.data.train_fraction", "cfg.optim.lr_encoder"):
        assert col in df.columns, col
    row = df[(df["freezing"] == "none") & (df["seed"] == 1)].iloc[0]
    assert row["test.intent.accuracy"] == pytest.approx(0.97 - 0.002)
    assert row["overrides"] == "freezing=none seed=1"
    assert pd.api.types.is_numeric_dtype(df["test.intent.accuracy"])
    assert "cost.params_trainable" in default_metrics(df)
    assert "test.slots.per_entity.artist" not in default_metrics(df)


def test_load_runs_reads_hydra_folder_fallback(tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "2025-01-01" / "12-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"freezing": "backbone", "hydra/launcher": "basic"}}}}))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["freezing=backbone"]))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 7}))
    df = load_runs(tmp_path)
    assert df.loc[0, "freezing"] == "backbone" and df.loc[0, "seed"] == 7
    assert df.loc[0, "status"] == "unknown" and df.loc[0, "problems"] == ""


def test_load_histories(sweep: Path) -> None:
    hist = load_histories(sweep)
    assert set(hist["freezing"]) == set(SCENARIOS)
    assert len(hist) == 3 * (12 + 2)  # completed, running and corrupt runs have a history
    assert {"epoch", "dev.intent.accuracy", "run_dir", "seed", "status"} <= set(hist.columns)


def test_mean_ci_by_hand() -> None:
    out = mean_ci([0.90, 0.92, 0.94])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert out["mean"] == pytest.approx(0.92)
    assert out["std"] == pytest.approx(0.02)
    assert out["ci_low"] == pytest.approx(0.92 - half)
    assert out["ci_high"] == pytest.approx(0.92 + half)
    assert out["n"] == 3
    single = mean_ci([0.5, float("nan")])
    assert single["n"] == 1 and math.isnan(single["std"]) and math.isnan(single["ci_low"])


def test_summarize_matches_hand_computation(sweep: Path) -> None:
    with pytest.warns(RunLoadWarning):
        df = load_runs(sweep)
    table = summarize(df, by="freezing")
    assert list(table["freezing"]) == ["none", "all", "backbone", "gradual"]
    by = table.set_index("freezing")
    assert by.loc["none", "n"] == 3 and by.loc["none", "running"] == 1
    assert by.loc["backbone", "failed"] == 1 and by.loc["backbone", "runs"] == 4
    assert by.loc["gradual", "problems"] == 1 and by.loc["gradual", "n"] == 3
    values = [0.97 + e for e in NOISE]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = 4.302652729911275 * std / math.sqrt(3)
    assert by.loc["none", "test.intent.accuracy:mean"] == pytest.approx(mean)
    assert by.loc["none", "test.intent.accuracy:std"] == pytest.approx(std)
    assert by.loc["none", "test.intent.accuracy:ci_high"] == pytest.approx(mean + half)
    assert by.loc["none", "test.intent.accuracy:n"] == 3
    assert by.loc["all", "cost.params_trainable:mean"] == 0


def test_summarize_custom_metrics_and_bad_column(sweep: Path) -> None:
    with pytest.warns(RunLoadWarning):
        df = load_runs(sweep)
    table = summarize(df, by=["freezing", "optim"], metrics=["cost.seconds_per_epoch"])
    assert [c for c in table.columns if ":" in c] == [
        f"cost.seconds_per_epoch:{s}" for s in ("mean", "std", "ci_low", "ci_high", "n")]
    with pytest.raises(KeyError, match="nope"):
        summarize(df, by="nope")


def test_varying_columns_learning_curve(tmp_path: Path) -> None:
    with pytest.warns(RunLoadWarning):
        df = load_runs(write_sweep(tmp_path / "lc", fractions=(0.05, 1.0)))
    assert varying_columns(df) == ["freezing", "cfg.data.train_fraction"]
    table = summarize(df, by=varying_columns(df))
    assert len(table) == 8 and set(table["cfg.data.train_fraction"]) == {0.05, 1.0}


def test_unconverged_runs_label_counts_and_steps(tmp_path: Path) -> None:
    """`converged` (true / false, absent in older runs) is counted per group; labels.json gives
    each task's label count; steps.csv gives per-step losses, where loss spikes are counted."""
    root = tmp_path / "sweep"
    for seed, converged in zip(SEEDS, (True, False, None), strict=True):
        doc = metrics_doc("none", seed)
        if converged is not None:
            doc["converged"] = converged
        run = write_run(root / f"{seed}_seed{seed}", "none", seed, metrics=doc)
        (run / "labels.json").write_text(json.dumps({"intent": ["a", "b", "c"], "slots": ["O", "B-x"]}))
        pd.DataFrame({"epoch": 1, "step": [10, 20, 30], "train.intent.loss": [1.0, 3.5, 0.9],
                      "train.slots.loss": 1.0}).to_csv(run / "steps.csv", index=False)
    write_run(root / "3_seed0", "backbone", 0)  # an older run: no `converged` record
    nothing = metrics_doc("all", 0) | {"steps": 0, "converged": None}  # trains nothing: n/a
    write_run(root / "4_seed0", "all", 0, metrics=nothing)
    df = load_runs(root)
    assert df["labels.intent"].dropna().tolist() == [3, 3, 3]
    assert not any(c.startswith("labels.") or c == "converged" for c in default_metrics(df))
    table = summarize(df, by="freezing").set_index("freezing")
    assert table.loc["none", "unconverged"] == 1 and table.loc["none", "convergence_unknown"] == 1
    assert table.loc["backbone", "unconverged"] == 0 and table.loc["backbone", "convergence_unknown"] == 1
    assert table.loc["all", "unconverged"] == 0 and table.loc["all", "convergence_unknown"] == 0
    _, rows = summary_tables(table.reset_index(), ["freezing"], ["test.intent.accuracy"])["Quality (test)"]
    assert [r[4] for r in rows] == ["1 (1 unknown)", "0", "unknown"]  # none, all, backbone
    steps = load_steps(root)
    assert len(steps) == 9 and {"run_dir", "seed", "freezing", "train.intent.loss"} <= set(steps.columns)
    spikes = add_derived(df, load_histories(root), steps)["stability.loss_spikes"]
    assert spikes.dropna().tolist() == [1, 1, 1] and spikes.isna().sum() == 2  # 4.5 > 2 x 2.0
