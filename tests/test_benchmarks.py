"""Smoke tests of benchmarks/: each benchmark at tiny sizes on the tiny backbone writes its ratios."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import run as bench_run  # noqa: E402
from ablation import bench_ablation  # noqa: E402
from common import REPO_ROOT, backbone_folder, display_path, header  # noqa: E402
from hardware import bench_hardware  # noqa: E402
from profile_epoch import bench_profile  # noqa: E402
from targets import speed_accounting, target_verdicts  # noqa: E402
from training import PAIRINGS, RunSettings, bench_freezing, bench_train  # noqa: E402


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return backbone_folder("tiny", tmp_path_factory.mktemp("bench"))


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_encode_cli_writes_json_and_markdown(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    [result] = bench_run.main(["encode", "--backbone", "tiny", "--data", str(shared_data / "snips"),
                               "--encode-sentences", "40", "--encode-batch-size", "16", "--repeats", "1",
                               "--work-dir", str(tmp_path), "--out", str(out)])
    saved = json.loads((out / "encode.json").read_text())
    assert saved["ratios"] == result["ratios"]
    assert "## Ratios" in (out / "encode.md").read_text()
    assert {"cpu", "cores", "torch", "torch_threads"} <= set(saved["machine"])
    assert saved["command"] and saved["date"]
    for key in ("mtexp_fp32_vs_st_fp32_speed", "mtexp_bf16_vs_st_bf16_speed",
                "mtexp_default_vs_st_default_speed", "mtexp_default_min_cosine"):
        assert positive(result["ratios"][key]), key
    assert result["ratios"]["mtexp_default_precision"] in ("fp32", "bf16")
    assert {row["setting"] for row in result["rows"]} >= {"mtexp default (precision=auto)", "mtexp fp32"}
    assert all(positive(row["sentences_per_s"]) for row in result["rows"])


def test_hardware_reports_fractions_of_peak(shared_data: Path, tiny_backbone: Path) -> None:
    sentences = [f"play song number {i} by the band" for i in range(16)]
    result = bench_hardware(tiny_backbone, sentences, batch_size=8, max_length=32, matmul_size=64, repeats=1)
    for measure in ("forward", "forward+backward", "encode()"):
        for dtype in ("fp32", "bf16"):
            assert positive(result["ratios"][f"{measure} {dtype} / matmul peak"])
    assert all(positive(row["tflops"]) for row in result["rows"])


def test_train_compares_mtexp_with_hf_trainer(shared_data: Path, tiny_backbone: Path, tmp_path: Path) -> None:
    # Settings away from both runners' defaults, so that a runner ignoring one is caught below.
    settings = RunSettings(tiny_backbone, shared_data / "snips", train_examples=24, epochs=2, batch_size=8,
                           max_length=40, lr=3e-4, precision="bf16", threads=1)
    result = bench_train(settings, tmp_path, rounds=2)
    assert result["benchmark"] == "train-bf16" and result["settings"]["like_for_like"] is True
    assert positive(result["ratios"]["mtexp_vs_hf_samples_per_second"])
    for row in result["rows"]:
        assert positive(row["train_samples_per_second"])
        assert 0 <= row["test_intent_accuracy"] <= 1 and 0 <= row["test_slot_f1"] <= 1
        assert len(row["rounds_samples_per_second"]) == 2  # best of two interleaved rounds
        assert row["train_samples_per_second"] == max(row["rounds_samples_per_second"])
        assert row["seeds"] == [0, 1]  # one seed per round; the scores are their mean
        for score in ("test_intent_accuracy", "test_slot_f1"):
            assert row[score] == pytest.approx(sum(row[f"rounds_{score}"]) / 2, abs=1e-6)
    mtexp_row, hf_row = result["rows"]
    assert result["ratios"]["slot_f1_points_by_seed"] == [
        pytest.approx(100 * (ours - theirs), abs=0.01)
        for ours, theirs in zip(mtexp_row["rounds_test_slot_f1"], hf_row["rounds_test_slot_f1"], strict=True)]
    assert len(result["ratios"]["mtexp_vs_hf_samples_per_second_by_round"]) == 2
    assert bench_run.training_share_of_peak([result]) == {}
    for n in range(2):
        mtexp = effective_mtexp_settings(tmp_path / f"train-bf16-r{n}-mtexp")
        hf = json.loads((tmp_path / f"train-bf16-r{n}-hf.json").read_text())["settings"]
        configured = {"batch_size": 8, "lr": 3e-4, "epochs": 2, "max_length": 40, "precision": "bf16",
                      "schedule": "linear", "warmup": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0,
                      "optimizer_steps": 2 * 3, "seed": n}  # 24 sentences in batches of 8, twice
        for key, value in configured.items():
            assert mtexp[key] == pytest.approx(value) and hf[key] == pytest.approx(value), key
        # Like for like: both runners batch sentences of similar length.
        assert mtexp["group_by_length"] is True and hf["group_by_length"] is True
    log = (tmp_path / "train-bf16-r0-hf.log").read_text()
    assert "Traceback" not in log


def test_default_against_default_runs_each_runner_as_it_comes(
    shared_data: Path, tiny_backbone: Path, tmp_path: Path
) -> None:
    settings = RunSettings(tiny_backbone, shared_data / "snips", train_examples=16, epochs=1, batch_size=8,
                           threads=1)
    result = bench_train(settings, tmp_path, PAIRINGS["default"])
    assert result["benchmark"] == "train-default" and result["settings"]["like_for_like"] is False
    config = yaml.safe_load((tmp_path / "train-default-r0-mtexp" / "config.yaml").read_text())
    assert config["trainer"]["precision"] == "auto"
    mtexp, hf = result["rows"]
    assert mtexp["precision"] in ("fp32", "bf16")  # what auto resolved to, from metrics.json
    assert hf["precision"] == "fp32" and hf["batches"] == "random"
    hf_settings = json.loads((tmp_path / "train-default-r0-hf.json").read_text())["settings"]
    assert hf_settings["group_by_length"] is False


def test_the_reference_switches_on_the_trainers_length_grouping() -> None:
    from hf_reference import sampling_arguments
    from transformers import TrainingArguments

    grouped = TrainingArguments(output_dir="unused", use_cpu=True, **sampling_arguments("group_by_length"))
    plain = TrainingArguments(output_dir="unused", use_cpu=True, **sampling_arguments("random"))
    strategy = getattr(grouped, "train_sampling_strategy", None)
    assert strategy == "group_by_length" or getattr(grouped, "group_by_length", False) is True
    assert getattr(plain, "train_sampling_strategy", "random") == "random"
    assert getattr(plain, "group_by_length", False) is False


def effective_mtexp_settings(run_dir: Path) -> dict:
    """The training settings of an mtexp run, from its resolved config.yaml and history.csv."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    trainer, schedule = config["trainer"], config["schedule"]
    assert schedule["min_lr_ratio"] == 0  # linear decay to 0, as the Trainer's "linear"
    return {
        "batch_size": trainer["batch_size"] * trainer["grad_accumulation"],
        "lr": config["optim"]["lr"],
        "schedule": schedule["name"],
        "warmup": schedule["warmup_ratio"],
        "epochs": trainer["epochs"],
        "optimizer_steps": int(pd.read_csv(run_dir / "history.csv")["step"].iloc[-1]),
        "max_length": config["backbone"]["max_length"],
        "precision": trainer["precision"],
        "group_by_length": config["data"]["group_by_length"],
        "weight_decay": config["optim"]["weight_decay"],
        "max_grad_norm": trainer["max_grad_norm"],
        "seed": config["seed"],
    }


def test_freezing_reports_ratios_to_none(shared_data: Path, tiny_backbone: Path, tmp_path: Path) -> None:
    settings = RunSettings(tiny_backbone, shared_data / "snips", train_examples=16, epochs=1, threads=1)
    result = bench_freezing(settings, tmp_path, other_epochs=1, scenarios=("backbone",))
    assert [row["scenario"] for row in result["rows"]] == ["none", "backbone", "backbone, second run"]
    backbone = result["rows"][1]
    for key in ("seconds_per_epoch_vs_none", "peak_memory_mb_vs_none", "params_trainable_vs_none"):
        assert positive(backbone[key]), key
    assert backbone["params_trainable"] < result["rows"][0]["params_trainable"]
    assert positive(result["ratios"]["backbone/none wall time, 1 epochs (train_seconds incl. cache)"])
    first, second = result["rows"][1], result["rows"][2]
    assert second["scenario"] == "backbone, second run"
    assert (first["feature_cache"], second["feature_cache"]) == ("miss", "hit")
    assert result["ratios"]["backbone second run feature_cache"] == "hit"
    assert positive(result["ratios"]["backbone second/first run cache_seconds"])


def test_profile_splits_the_training_loop_by_kind_of_operator(
    shared_data: Path, tiny_backbone: Path, tmp_path: Path
) -> None:
    result = bench_profile(tiny_backbone, shared_data / "snips", train_examples=32, batch_size=8,
                           max_length=32, precisions=["fp32"], work_dir=tmp_path, threads=1)
    [row] = result["rows"]
    shares = {key: value for key, value in row.items() if key not in ("precision", "epoch_seconds")}
    assert row["precision"] == "fp32" and positive(row["epoch_seconds"])
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert shares["matrix products"] > 0 and shares["optimizer"] > 0
    outside = result["ratios"]["fp32 share outside matrix products and optimizer"]
    assert outside == pytest.approx(1 - shares["matrix products"] - shares["optimizer"], abs=1e-3)


def test_speed_accounting_sets_the_needed_speed_up_against_the_ablation_bounds() -> None:
    def train(precision: str, speed: float) -> dict:
        return {"benchmark": f"train-{precision}", "settings": {"precision": precision},
                "ratios": {"mtexp_vs_hf_samples_per_second": speed}}

    def row(precision: str, variant: str, bound: float) -> dict:
        return {"precision": precision, "variant": variant, "bound": bound}

    ablation = {"benchmark": "ablation", "rows": [
        row("fp32", "as is", 1.0), row("fp32", "no dropout", 1.05), row("fp32", "all three removed", 1.25),
        row("bf16", "as is", 1.0), row("bf16", "all three removed", 1.6),
        row("bf16", "compiled encoder", 1.1)]}
    fp32, bf16 = speed_accounting([train("fp32", 1.0), train("bf16", 1.04), ablation])
    # 1.3x from 1.0x: 1 - 1/1.3 = 23.1% of the step gone; all three removed frees 1 - 1/1.25 = 20%.
    assert fp32.startswith("fp32: 1.3x from 1.0x needs mtexp's training step 1.30x faster, 23.1% of its time")
    assert "take 20.0% (all three removed: 1.25x), so not even all of that work gone would do" in fp32
    assert fp32.endswith("each alone: no dropout 1.05x")
    # 1.3x from 1.04x: 1.25x faster, 20% gone, of the 37.5% that all three take: 53%.
    assert "1.25x faster, 20.0% of its time gone" in bf16 and "53% of that work would have to go" in bf16
    assert bf16.endswith("each alone: compiled encoder 1.1x")
    assert speed_accounting([train("fp32", 1.4), ablation])[0] == "fp32: met (1.4x); nothing to take away"
    assert speed_accounting([train("fp32", 1.04)]) == []  # no ablation: nothing to say
    [alone] = speed_accounting([train("bf16", 1.04), {**ablation, "rows": ablation["rows"][3:5]}])
    assert alone.endswith("53% of that work would have to go")


def test_ablation_removes_what_each_variant_names(
    shared_data: Path, tiny_backbone: Path, tmp_path: Path
) -> None:
    variants = ("as is", "no dropout", "word embeddings frozen", "no optimizer step", "all three removed")
    result = bench_ablation(tiny_backbone, shared_data / "snips", train_examples=32, batch_size=8,
                            max_length=32, precisions=["fp32"], work_dir=tmp_path, epochs=1,
                            variants=variants, threads=1)
    rows = {row["variant"]: row for row in result["rows"]}
    as_is = rows["as is"]
    config = json.loads((tiny_backbone / "config.json").read_text())
    assert as_is["bound"] == 1.0 and as_is["optimizer_step"] and as_is["max_dropout"] > 0
    assert {row["steps"] for row in rows.values()} == {32 // 8}  # every variant on the same 4 batches
    assert rows["no dropout"]["max_dropout"] == 0 and rows["no dropout"]["optimizer_step"]
    frozen = rows["word embeddings frozen"]["params_trainable"]
    assert frozen == as_is["params_trainable"] - config["vocab_size"] * config["hidden_size"]
    assert not rows["no optimizer step"]["optimizer_step"]
    removed = rows["all three removed"]
    assert not removed["optimizer_step"] and removed["max_dropout"] == 0
    assert removed["params_trainable"] == frozen
    for variant in variants[1:]:
        assert positive(rows[variant]["seconds"])
        assert result["ratios"][f"fp32 {variant}: bound"] == pytest.approx(
            as_is["seconds"] / rows[variant]["seconds"], rel=1e-3)
    with pytest.raises(ValueError, match="as is"):
        bench_ablation(tiny_backbone, shared_data / "snips", 32, 8, 32, ["fp32"], tmp_path,
                       variants=("no dropout",))


def test_result_files_show_no_machine_specific_paths(tmp_path: Path) -> None:
    assert display_path(bench_run.backbone_folder("minilm", tmp_path)).startswith("bundled all-MiniLM-L6-v2")
    assert display_path(REPO_ROOT.parent / "shared" / "data" / "snips") == "../shared/data/snips"
    assert display_path(REPO_ROOT / "results" / "bench") == "results/bench"
    assert display_path(tmp_path / "tiny-backbone") == "tiny-backbone"


def test_precision_option_takes_one_or_more_pairings() -> None:
    assert bench_run.parser().parse_args(["train"]).precision == ["fp32", "bf16", "default"]
    assert bench_run.parser().parse_args(["train"]).rounds == 3
    assert bench_run.parser().parse_args(["train", "--precision", "bf16"]).precision == ["bf16"]
    with pytest.raises(SystemExit):
        bench_run.parser().parse_args(["train", "--precision", "fp16"])


def test_targets_are_judged_from_the_ratios() -> None:
    results = [
        {"benchmark": "encode", "ratios": {"mtexp_default_precision": "bf16",
                                           "mtexp_default_vs_st_default_speed": 1.7,
                                           "mtexp_default_min_cosine": 0.9995}},
        {"benchmark": "train-bf16", "settings": {"precision": "bf16"},
         "ratios": {"mtexp_vs_hf_samples_per_second": 1.4, "intent_accuracy_points_mtexp_minus_hf": -0.3,
                    "slot_f1_points_mtexp_minus_hf": 0.6}},
        {"benchmark": "train-default", "settings": {"precision": "auto"},
         "ratios": {"mtexp_vs_hf_samples_per_second": 1.0, "intent_accuracy_points_mtexp_minus_hf": 3.0,
                    "slot_f1_points_mtexp_minus_hf": 3.0}},
        {"benchmark": "freezing", "ratios": {"backbone/none peak_memory_mb": 0.7,
                                             "backbone/none wall time, 5 epochs": 0.2,
                                             "backbone second/first run cache_seconds": 0.04}},
    ]
    lines = target_verdicts(results, {"mtexp training fp32 / matmul peak (estimate)": 0.6,
                                      "mtexp training bf16 / matmul peak (estimate)": 0.55})
    status = {line.split(" = ")[0].split(": ", 1)[1]: line.split(":")[0] for line in lines}
    assert status == {
        "default encode() (bf16) vs SentenceTransformer.encode() default, speed": "met",
        "default encode() min cosine to fp32": "missed",
        "training samples/s vs HF Trainer (length-grouped), bf16": "met",
        "test intent accuracy, mtexp - HF points, bf16": "met",
        "test slot F1, mtexp - HF points, bf16": "missed",
        "backbone/none peak_memory_mb": "missed",
        "backbone/none wall time, 5 epochs": "met",
        "backbone second/first run cache_seconds (stored frozen features)": "met",
        "mtexp training fp32 / matmul peak (estimate)": "missed",
        "mtexp training bf16 / matmul peak (estimate)": "met",
    }


def test_summary_is_rewritten_from_saved_results(tmp_path: Path) -> None:
    encode = {**header("encode", {}), "rows": [], "notes": [],
              "ratios": {"mtexp_default_precision": "bf16", "mtexp_default_vs_st_default_speed": 1.2,
                         "mtexp_default_min_cosine": 0.99995, "mtexp_fp32_vs_st_fp32_speed": 1.01,
                         "mtexp_bf16_vs_st_bf16_speed": 1.0}}
    (tmp_path / "encode.json").write_text(json.dumps(encode))
    [loaded] = bench_run.main(["summary", "--out", str(tmp_path)])
    assert loaded["ratios"] == encode["ratios"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["targets"][0].startswith("missed: default encode() (bf16)")
    assert summary["targets"][1].startswith("met: default encode() min cosine")
    assert summary["headlines"]["Like for like"] == [
        "encode, fp32: mtexp 1.01x sentence-transformers (fp32)",
        "encode, bf16: mtexp 1.0x sentence-transformers (bf16)"]
    assert summary["headlines"]["Default against default"] == [
        "encode: encode() (bf16) 1.2x SentenceTransformer.encode() (fp32)"]
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith("Written by `")
    assert markdown.index("# Like for like") < markdown.index("# Default against default") < markdown.index(
        "# Targets")
    with pytest.raises(SystemExit):
        bench_run.main(["summary", "--out", str(tmp_path / "empty")])
