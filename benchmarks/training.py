"""train and freezing: runs of `mtexp.train` (each in a fresh process) and the HF Trainer reference."""

from __future__ import annotations

import json
import shutil
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
    cache_root: Path | None = None  # mtexp's paths.cache_root (tokenised and frozen features)

    def mtexp_overrides(self) -> list[str]:
        overrides = [
            "backbone=hub", f"backbone.name_or_path={self.backbone}",
            f"backbone.max_length={self.max_length}", "data=snips", f"data.path={self.data.resolve()}",
            f"data.max_train_examples={self.train_examples}",
            f"trainer.epochs={self.epochs}", f"trainer.batch_size={self.batch_size}",
            f"trainer.precision={self.precision}", "trainer.progress=false", f"optim.lr={self.lr}",
            "eval.cka_sentences=0", "eval.train_subset=0", f"seed={self.seed}",
        ]
        overrides += [f"trainer.threads={self.threads}"] if self.threads else []
        return overrides + ([f"paths.cache_root={self.cache_root}"] if self.cache_root else [])


@dataclass(frozen=True)
class Pairing:
    """One comparison of the `train` benchmark: each runner's precision, the Trainer's sampler."""

    name: str
    mtexp_precision: str  # auto: mtexp's default
    hf_precision: str
    hf_sampling: str  # group_by_length: like mtexp's batches; random: the Trainer's default

    @property
    def like_for_like(self) -> bool:
        return self.mtexp_precision == self.hf_precision and self.hf_sampling == "group_by_length"


PAIRINGS = {
    "fp32": Pairing("train-fp32", "fp32", "fp32", "group_by_length"),
    "bf16": Pairing("train-bf16", "bf16", "bf16", "group_by_length"),
    "default": Pairing("train-default", "auto", "fp32", "random"),  # each runner as it comes
}


def run_mtexp(settings: RunSettings, run_dir: Path, extra: list[str] | None = None) -> tuple[dict, float]:
    """One `python -m mtexp.train` run; its metrics.json and the process wall time."""
    args = ["-m", "mtexp.train", *settings.mtexp_overrides(), *(extra or []), f"hydra.run.dir={run_dir}"]
    wall = run_script(args, run_dir.with_suffix(".log"))
    return json.loads((run_dir / "metrics.json").read_text()), wall


def run_reference(settings: RunSettings, out: Path, sampling: str = "group_by_length") -> tuple[dict, float]:
    args = [
        str(Path(__file__).with_name("hf_reference.py")), "--backbone", str(settings.backbone),
        "--data", str(settings.data), "--train-examples", str(settings.train_examples),
        "--epochs", str(settings.epochs), "--batch-size", str(settings.batch_size),
        "--max-length", str(settings.max_length), "--lr", str(settings.lr), "--seed", str(settings.seed),
        "--precision", settings.precision, "--sampling", sampling, "--out", str(out),
    ] + (["--threads", str(settings.threads)] if settings.threads else [])
    wall = run_script(args, out.with_suffix(".log"))
    return json.loads(out.read_text()), wall


def mtexp_row(metrics: dict, wall: float) -> dict[str, Any]:
    return {"runner": "mtexp", "precision": metrics.get("precision"), "batches": "length-grouped",
            "train_samples_per_second": metrics["cost"]["train_samples_per_second"],
            "train_seconds": metrics["cost"]["train_seconds"], "process_seconds": round(wall, 1),
            "test_intent_accuracy": metrics["test"]["intent"]["accuracy"],
            "test_slot_f1": metrics["test"]["slots"]["f1"], "epoch_scored": metrics["best_epoch"]}


def reference_row(reference: dict, wall: float, sampling: str, epochs: int) -> dict[str, Any]:
    return {"runner": "hf-trainer", "precision": reference["settings"]["precision"],
            "batches": "length-grouped" if sampling == "group_by_length" else "random",
            "padding_fraction": reference.get("padding_fraction"),
            "train_samples_per_second": reference["train_samples_per_second"],
            "train_seconds": reference["train_runtime"], "process_seconds": round(wall, 1),
            "test_intent_accuracy": reference["test_intent_accuracy"],
            "test_slot_f1": reference["test_slot_f1"], "epoch_scored": epochs}


SCORES = ("test_intent_accuracy", "test_slot_f1")


def best_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A runner's rounds in one row: the fastest round's speed and timings, the test scores'
    mean over the rounds (each its own seed), and every round's samples/s and scores beside them."""
    fastest = max(rounds, key=lambda row: row["train_samples_per_second"])
    best = {key: value for key, value in fastest.items() if key != "seed"}
    best["rounds_samples_per_second"] = [row["train_samples_per_second"] for row in rounds]
    best["seeds"] = [row["seed"] for row in rounds]
    for key in SCORES:
        values = [row[key] for row in rounds]
        best[f"rounds_{key}"] = [round(value, 6) for value in values]
        best[key] = round(sum(values) / len(values), 6)
    return best


def points(ours: float, theirs: float) -> float:
    return round(100 * (ours - theirs), 2)


def pairing_ratios(mtexp_rounds: list[dict[str, Any]], hf_rounds: list[dict[str, Any]],
                   mtexp: dict[str, Any], hf: dict[str, Any]) -> dict[str, Any]:
    """Speed: best round over best round, and each round's pair (same seed); quality: the
    difference of the seeds' means, in points, and each seed's difference."""
    pairs = list(zip(mtexp_rounds, hf_rounds, strict=True))
    speed = "train_samples_per_second"
    ratios: dict[str, Any] = {
        "mtexp_vs_hf_samples_per_second": ratio(mtexp[speed], hf[speed]),
        "mtexp_vs_hf_samples_per_second_by_round": [ratio(ours[speed], theirs[speed])
                                                    for ours, theirs in pairs],
    }
    for score, name in zip(SCORES, ("intent_accuracy", "slot_f1"), strict=True):
        ratios[f"{name}_points_mtexp_minus_hf"] = points(mtexp[score], hf[score])
        ratios[f"{name}_points_by_seed"] = [points(ours[score], theirs[score]) for ours, theirs in pairs]
    return ratios


def bench_train(settings: RunSettings, work_dir: Path, pairing: Pairing | None = None,
                rounds: int = 1) -> dict[str, Any]:
    """Full fine-tuning samples/s of mtexp vs the HF Trainer reference, with test scores.

    The two runners alternate (round r runs mtexp first when r is even, the Trainer first when
    odd), `rounds` times each, round n with seed `settings.seed + n`; each runner's fastest round
    gives its speed, the mean over the rounds its test scores. `pairing` defaults to like for like
    in `settings.precision`.
    """
    pairing = pairing or PAIRINGS.get(settings.precision) or Pairing(
        f"train-{settings.precision}", settings.precision, settings.precision, "group_by_length")
    ours = replace(settings, precision=pairing.mtexp_precision)
    theirs = replace(settings, precision=pairing.hf_precision)
    mtexp_rounds: list[dict[str, Any]] = []
    hf_rounds: list[dict[str, Any]] = []
    for n in range(rounds):
        seed = settings.seed + n

        def mtexp_run(n: int = n, seed: int = seed) -> None:
            metrics, wall = run_mtexp(replace(ours, seed=seed), work_dir / f"{pairing.name}-r{n}-mtexp",
                                      ["freezing=none"])
            mtexp_rounds.append({**mtexp_row(metrics, wall), "seed": seed})

        def hf_run(n: int = n, seed: int = seed) -> None:
            out = work_dir / f"{pairing.name}-r{n}-hf.json"
            reference, wall = run_reference(replace(theirs, seed=seed), out, pairing.hf_sampling)
            row = reference_row(reference, wall, pairing.hf_sampling, settings.epochs)
            hf_rounds.append({**row, "seed": seed})

        for step in (mtexp_run, hf_run) if n % 2 == 0 else (hf_run, mtexp_run):
            step()
    mtexp, hf = best_rounds(mtexp_rounds), best_rounds(hf_rounds)
    result = header(pairing.name, {**_plain(settings), "precision": pairing.mtexp_precision,
                                   "hf_precision": pairing.hf_precision, "hf_sampling": pairing.hf_sampling,
                                   "like_for_like": pairing.like_for_like, "rounds": rounds,
                                   "freezing": "none"})
    result["rows"] = [mtexp, hf]
    result["ratios"] = pairing_ratios(mtexp_rounds, hf_rounds, mtexp, hf)
    result["notes"] = train_notes(pairing, rounds)
    return result


def train_notes(pairing: Pairing, rounds: int) -> list[str]:
    comparison = (
        f"Like for like: both runners in {pairing.mtexp_precision}, both with length-grouped batches "
        "(the Trainer's train_sampling_strategy='group_by_length')" if pairing.like_for_like else
        f"Default against default: mtexp with trainer.precision={pairing.mtexp_precision} (its default), "
        f"the Trainer with its defaults ({pairing.hf_precision}, {pairing.hf_sampling} batches)")
    order = ("Length-grouped batches differ in order: mtexp sorts by length within chunks of 50 batches "
             "and shuffles the batches; the Trainer's LengthGroupedSampler sorts each megabatch longest "
             "first and does not shuffle, so every epoch runs from long batches to short ones and again."
             if pairing.hf_sampling == "group_by_length" else
             "mtexp's batches are length-grouped and shuffled; the Trainer's are random.")
    return [
        comparison + "; both processes run with mtexp's allocator setting (glibc keeps freed blocks "
        "below 256 MB for reuse, mtexp.resources.reuse_freed_memory).",
        "Same backbone folder, train sentences (mtexp's seeded selection), batch size, max length, "
        "epochs, learning rate, weight decay 0.01, 10% linear warm-up then linear decay, grad norm 1.0.",
        order,
        f"{rounds} interleaved round(s) per runner, each a fresh process; round n runs both runners with "
        "seed + n (the same train sentences within a round). Speed: each runner's "
        "fastest round (rounds_samples_per_second lists them all; the ratio of each round's pair is "
        "beside the headline); test scores: the mean over the rounds' seeds (rounds_test_* list them).",
        "Samples/s: mtexp's cost.train_samples_per_second (training loop only, dev evaluation between "
        "epochs excluded); HF: train sentences x epochs / Trainer's train_runtime (no evaluation).",
        "Test scores: mtexp restores its best dev epoch (epoch_scored); HF keeps the last epoch. "
        "Slot F1 is entity-level seqeval (strict IOB2) on words for both.",
    ]


def bench_freezing(settings: RunSettings, work_dir: Path, other_epochs: int,
                   scenarios: tuple[str, ...] = SCENARIOS, partial_k: int | None = None) -> dict[str, Any]:
    """Per scenario: seconds/epoch, peak memory, trainable params, each as a ratio to `none`.

    `none` and `backbone` train `settings.epochs` epochs; the other scenarios `other_epochs`.
    `partial_k` overrides the `partial` preset's number of frozen layers. The runs start from an
    empty cache root; `backbone` then runs a second time, reading the frozen features the first
    run stored, as the other runs of a sweep would (the same seed: `train_examples` picks the
    sentences by seed, and other sentences are other features).
    """
    cache_root = work_dir / "freezing-cache"
    shutil.rmtree(cache_root, ignore_errors=True)
    settings = replace(settings, cache_root=cache_root)
    plan = [(scenario, scenario, settings.seed) for scenario in dict.fromkeys(("none", *scenarios))]
    if "backbone" in scenarios:
        plan.append(("backbone, second run", "backbone", settings.seed))
    rows = []
    for label, scenario, seed in plan:
        epochs = settings.epochs if scenario in ("none", "backbone") else other_epochs
        extra = [f"freezing={scenario}"]
        if scenario == "partial" and partial_k is not None:
            extra.append(f"freezing.k={partial_k}")
        folder = work_dir / f"freezing-{label.replace(', ', '-').replace(' ', '-')}"
        metrics, wall = run_mtexp(replace(settings, epochs=epochs, seed=seed), folder, extra)
        rows.append(freezing_row(label, epochs, metrics, wall))
    base = rows[0]
    for row in rows:
        for key in ("seconds_per_epoch", "peak_memory_mb", "train_memory_mb", "params_trainable"):
            row[f"{key}_vs_none"] = ratio(row[key], base[key])
    result = header("freezing", {**_plain(settings), "other_epochs": other_epochs, "partial_k": partial_k})
    result["rows"] = rows
    result["ratios"] = {f"{row['scenario']} seconds_per_epoch / none": row["seconds_per_epoch_vs_none"]
                        for row in rows[1:] if row["scenario"] in scenarios}
    result["ratios"].update(backbone_ratios({row["scenario"]: row for row in rows}, base, settings.epochs))
    result["notes"] = [
        "Each scenario runs `python -m mtexp.train freezing=<scenario>` in a fresh process on the same data, "
        "from an empty cache root; `backbone, second run` is backbone again (the same sentences), "
        "reading the frozen features the first backbone run stored.",
        "train_seconds: training loop plus the frozen-feature cache build (backbone); seconds_per_epoch "
        "is train_seconds / epochs. peak_memory_mb is the process peak (RSS on CPU), train_memory_mb "
        "the peak above the level when training started.",
        "freezing=all trains nothing (0 s, 0 trainable parameters): it only evaluates the model.",
    ]
    return result


def freezing_row(label: str, epochs: int, metrics: dict, wall: float) -> dict[str, Any]:
    cost = metrics["cost"]
    return {"scenario": label, "epochs": epochs, "seconds_per_epoch": cost["seconds_per_epoch"],
            "train_seconds": cost["train_seconds"], "cache_seconds": cost["cache_seconds"],
            "feature_cache": cost.get("feature_cache"),
            "process_seconds": round(wall, 1), "peak_memory_mb": cost["peak_memory_mb"],
            "train_memory_mb": cost["train_memory_mb"], "params_trainable": cost["params_trainable"],
            "test_intent_accuracy": metrics["test"]["intent"]["accuracy"],
            "test_slot_f1": metrics["test"]["slots"]["f1"]}


def backbone_ratios(by_name: dict[str, dict[str, Any]], base: dict[str, Any], epochs: int) -> dict[str, Any]:
    """freezing=backbone against none, and its second run's cache time against its first's."""
    backbone = by_name.get("backbone")
    if backbone is None:
        return {}
    ratios = {
        f"backbone/none wall time, {epochs} epochs (train_seconds incl. cache)":
            ratio(backbone["train_seconds"], base["train_seconds"]),
        "backbone/none process wall time": ratio(backbone["process_seconds"], base["process_seconds"]),
        "backbone/none peak_memory_mb": backbone["peak_memory_mb_vs_none"],
        "backbone/none train_memory_mb": backbone["train_memory_mb_vs_none"],
    }
    second = by_name.get("backbone, second run")
    if second is not None:
        ratios["backbone second/first run cache_seconds"] = ratio(second["cache_seconds"],
                                                                  backbone["cache_seconds"])
        ratios["backbone second run feature_cache"] = second["feature_cache"]
    return ratios


def _plain(settings: RunSettings) -> dict[str, Any]:
    return {key: display_path(value) if isinstance(value, Path) else value
            for key, value in vars(settings).items()}
