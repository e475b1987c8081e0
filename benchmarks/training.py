"""train and freezing: runs of `mtexp.train` (each in a fresh process) and the HF Trainer reference."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common import display_path, header, ratio, run_script

from mtexp.scenarios import scenario_names

SCENARIOS = scenario_names(legacy=False)  # every freezing option, the reference (none) first


@dataclass
class RunSettings:
    """What the compared runs share."""

    backbone: Path
    data: Path
    train_examples: int
    epochs: int
    batch_size: int = 32
    max_length: int = 64
    lr: float = 1e-4
    seed: int = 0
    precision: str = "fp32"
    threads: int | None = None

    def mtexp_overrides(self) -> list[str]:
        overrides = [
            "backbone=hub", f"backbone.name_or_path={self.backbone}",
            f"backbone.max_length={self.max_length}", "data=snips", f"data.path={self.data.resolve()}",
            f"data.max_train_examples={self.train_examples}",
            f"trainer.epochs={self.epochs}", f"trainer.batch_size={self.batch_size}",
            f"trainer.precision={self.precision}", "trainer.progress=false", f"optim.lr={self.lr}",
            "eval.cka_sentences=0", "eval.train_subset=0", f"seed={self.seed}",
        ]
        return overrides + ([f"trainer.threads={self.threads}"] if self.threads else [])


def run_mtexp(settings: RunSettings, run_dir: Path, extra: list[str] | None = None) -> tuple[dict, float]:
    """One `python -m mtexp.train` run; its metrics.json and the process wall time."""
    args = ["-m", "mtexp.train", *settings.mtexp_overrides(), *(extra or []), f"hydra.run.dir={run_dir}"]
    wall = run_script(args, run_dir.with_suffix(".log"))
    return json.loads((run_dir / "metrics.json").read_text()), wall


def run_reference(settings: RunSettings, out: Path) -> tuple[dict, float]:
    args = [
        str(Path(__file__).with_name("hf_reference.py")), "--backbone", str(settings.backbone),
        "--data", str(settings.data), "--train-examples", str(settings.train_examples),
        "--epochs", str(settings.epochs), "--batch-size", str(settings.batch_size),
        "--max-length", str(settings.max_length), "--lr", str(settings.lr), "--seed", str(settings.seed),
        "--precision", settings.precision, "--out", str(out),
    ] + (["--threads", str(settings.threads)] if settings.threads else [])
    wall = run_script(args, out.with_suffix(".log"))
    return json.loads(out.read_text()), wall


def bench_train(settings: RunSettings, work_dir: Path) -> dict[str, Any]:
    """Full fine-tuning samples/s of mtexp vs the HF Trainer reference, with test scores."""
    name = f"train-{settings.precision}"
    metrics, mtexp_wall = run_mtexp(settings, work_dir / f"{name}-mtexp", ["freezing=none"])
    reference, reference_wall = run_reference(settings, work_dir / f"{name}-hf.json")
    rows = [
        {"runner": "mtexp", "train_samples_per_second": metrics["cost"]["train_samples_per_second"],
         "train_seconds": metrics["cost"]["train_seconds"], "process_seconds": round(mtexp_wall, 1),
         "test_intent_accuracy": metrics["test"]["intent"]["accuracy"],
         "test_slot_f1": metrics["test"]["slots"]["f1"], "epoch_scored": metrics["best_epoch"]},
        {"runner": "hf-trainer", "train_samples_per_second": reference["train_samples_per_second"],
         "train_seconds": reference["train_runtime"], "process_seconds": round(reference_wall, 1),
         "test_intent_accuracy": reference["test_intent_accuracy"],
         "test_slot_f1": reference["test_slot_f1"], "epoch_scored": settings.epochs},
    ]
    mtexp, hf = rows
    result = header(name, {**_plain(settings), "freezing": "none"})
    result["rows"] = rows
    result["ratios"] = {
        "mtexp_vs_hf_samples_per_second": ratio(mtexp["train_samples_per_second"],
                                                hf["train_samples_per_second"]),
        "intent_accuracy_points_mtexp_minus_hf": round(100 * (mtexp["test_intent_accuracy"]
                                                              - hf["test_intent_accuracy"]), 2),
        "slot_f1_points_mtexp_minus_hf": round(100 * (mtexp["test_slot_f1"] - hf["test_slot_f1"]), 2),
    }
    result["notes"] = [
        "Same backbone folder, train sentences (mtexp's seeded selection), batch size, max length, "
        "epochs, learning rate, weight decay 0.01, 10% linear warm-up then linear decay, grad norm 1.0.",
        "Samples/s: mtexp's cost.train_samples_per_second (training loop only, dev evaluation between "
        "epochs excluded); HF: train sentences x epochs / Trainer's train_runtime (no evaluation).",
        "Test scores: mtexp restores its best dev epoch (epoch_scored); HF keeps the last epoch. "
        "Slot F1 is entity-level seqeval (strict IOB2) on words for both.",
    ]
    return result


def bench_freezing(settings: RunSettings, work_dir: Path, other_epochs: int,
                   scenarios: tuple[str, ...] = SCENARIOS, partial_k: int | None = None) -> dict[str, Any]:
    """Per scenario: seconds/epoch, peak memory, trainable params, each as a ratio to `none`.

    `none` and `backbone` train `settings.epochs` epochs; the other scenarios `other_epochs`.
    `partial_k` overrides the `partial` preset's number of frozen layers.
    """
    rows = []
    for scenario in dict.fromkeys(("none", *scenarios)):
        epochs = settings.epochs if scenario in ("none", "backbone") else other_epochs
        extra = [f"freezing={scenario}"]
        if scenario == "partial" and partial_k is not None:
            extra.append(f"freezing.k={partial_k}")
        metrics, wall = run_mtexp(replace(settings, epochs=epochs), work_dir / f"freezing-{scenario}", extra)
        cost = metrics["cost"]
        rows.append({"scenario": scenario, "epochs": epochs, "seconds_per_epoch": cost["seconds_per_epoch"],
                     "train_seconds": cost["train_seconds"], "cache_seconds": cost["cache_seconds"],
                     "process_seconds": round(wall, 1), "peak_memory_mb": cost["peak_memory_mb"],
                     "train_memory_mb": cost["train_memory_mb"], "params_trainable": cost["params_trainable"],
                     "test_intent_accuracy": metrics["test"]["intent"]["accuracy"],
                     "test_slot_f1": metrics["test"]["slots"]["f1"]})
    base = rows[0]
    for row in rows:
        for key in ("seconds_per_epoch", "peak_memory_mb", "train_memory_mb", "params_trainable"):
            row[f"{key}_vs_none"] = ratio(row[key], base[key])
    by_name = {row["scenario"]: row for row in rows}
    result = header("freezing", {**_plain(settings), "other_epochs": other_epochs, "partial_k": partial_k})
    result["rows"] = rows
    result["ratios"] = {f"{row['scenario']} seconds_per_epoch / none": row["seconds_per_epoch_vs_none"]
                        for row in rows[1:]}
    if "backbone" in by_name:
        backbone = by_name["backbone"]
        result["ratios"].update({
            f"backbone/none wall time, {settings.epochs} epochs (train_seconds incl. cache)":
                ratio(backbone["train_seconds"], base["train_seconds"]),
            "backbone/none process wall time": ratio(backbone["process_seconds"], base["process_seconds"]),
            "backbone/none peak_memory_mb": backbone["peak_memory_mb_vs_none"],
            "backbone/none train_memory_mb": backbone["train_memory_mb_vs_none"],
        })
    result["notes"] = [
        "Each scenario runs `python -m mtexp.train freezing=<scenario>` in a fresh process on the same data.",
        "train_seconds: training loop plus the frozen-feature cache build (backbone); seconds_per_epoch "
        "is train_seconds / epochs. peak_memory_mb is the process peak (RSS on CPU), train_memory_mb "
        "the peak above the level when training started.",
        "freezing=all trains nothing (0 s, 0 trainable parameters): it only evaluates the model.",
    ]
    return result


def _plain(settings: RunSettings) -> dict[str, Any]:
    return {key: display_path(value) if isinstance(value, Path) else value
            for key, value in vars(settings).items()}
