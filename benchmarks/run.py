"""mtexp benchmarks: encode, train, freezing, hardware, profile, ablation, or all of them in one session.

    python benchmarks/run.py all --out results/bench
    python benchmarks/run.py train --train-examples 64 --epochs 1 --rounds 1 --out /tmp/bench  # quick

Each benchmark prints its ratios and writes <out>/<name>.json and <out>/<name>.md with the command,
machine and date; `all` also writes <out>/summary.md and prints the headline ratios (like for
like, then default against default) and each target met or missed with the measured figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import VARIANTS, bench_ablation, variant_list
from common import DEFAULT_DATA, backbone_folder, header, snips_sentences, to_markdown, write_result
from encode import bench_encode
from hardware import bench_hardware
from profile_epoch import bench_profile
from targets import LIKE_FOR_LIKE, headlines, speed_accounting, target_verdicts
from training import PAIRINGS, SCENARIOS, RunSettings, bench_freezing, bench_train

from mtexp.io import atomic_write_text

BENCHMARKS = ("encode", "train", "freezing", "hardware", "profile", "ablation")
RESULT_NAMES = ("encode", "train-fp32", "train-bf16", "train-default", "freezing", "hardware", "profile",
                "ablation")


def precisions(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    if not chosen or set(chosen) - set(PAIRINGS):
        raise argparse.ArgumentTypeError(f"expected some of {','.join(PAIRINGS)}; got {text!r}")
    return chosen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmarks of mtexp against the usual tools and the hardware.")
    p.add_argument("benchmark", choices=[*BENCHMARKS, "all", "summary"],
                   help="summary: rewrite summary.* from the result files already in --out")
    p.add_argument("--out", type=Path, default=Path("results/bench"), help="folder for the result files")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SNIPS folder (JointBERT layout)")
    p.add_argument("--backbone", default="minilm", help="minilm (bundled), tiny (random, tests) or a folder")
    p.add_argument("--work-dir", type=Path, default=None, help="run directories (default: temporary)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="encode/hardware: best of this many")
    p.add_argument("--encode-sentences", type=int, default=4000)
    p.add_argument("--encode-batch-size", type=int, default=64)
    p.add_argument("--train-examples", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3, help="train: epochs of both runners")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4,
                   help="train, freezing: both runners' learning rate (default: about the one tuned on SNIPS "
                        "dev for full fine-tuning, results/freezing_snips)")
    p.add_argument("--precision", default=",".join(PAIRINGS), type=precisions,
                   help="train: comma-separated pairings: fp32 and bf16 (like for like: both runners in "
                        "that precision, both length-grouped), default (each runner's defaults)")
    p.add_argument("--rounds", type=int, default=3,
                   help="train: interleaved rounds per pairing, best of them per runner")
    p.add_argument("--freezing-examples", type=int, default=2000)
    p.add_argument("--freezing-epochs", type=int, default=5, help="freezing: epochs of none and backbone")
    p.add_argument("--other-epochs", type=int, default=2, help="freezing: epochs of the other scenarios")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--partial-k", type=int, default=None, help="freezing: layers frozen by partial")
    p.add_argument("--hardware-sentences", type=int, default=512)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--ablation-examples", type=int, default=1000)
    p.add_argument("--ablation-epochs", type=int, default=2,
                   help="ablation: timed epochs after a warm-up epoch")
    p.add_argument("--variants", default=tuple(VARIANTS), type=variant_list,
                   help="ablation: comma-separated variants of the training loop (one must be 'as is')")
    return p


def run_one(name: str, args: argparse.Namespace, backbone: Path, work_dir: Path) -> list[dict[str, Any]]:
    settings = RunSettings(backbone, args.data, args.train_examples, args.epochs, args.batch_size,
                           args.max_length, args.lr, args.seed, "fp32", args.threads)
    runners: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "encode": lambda: [bench_encode(backbone, snips_sentences(args.data, args.encode_sentences),
                                        args.encode_batch_size, args.repeats)],
        "train": lambda: [bench_train(replace(settings, cache_root=work_dir / "cache"), work_dir,
                                      PAIRINGS[name], args.rounds) for name in args.precision],
        "freezing": lambda: [bench_freezing(
            replace(settings, train_examples=args.freezing_examples, epochs=args.freezing_epochs),
            work_dir, args.other_epochs, tuple(args.scenarios.split(",")), args.partial_k)],
        "hardware": lambda: [bench_hardware(
            backbone, snips_sentences(args.data, args.hardware_sentences), args.batch_size,
            args.max_length, args.matmul_size, args.repeats)],
        "profile": lambda: [bench_profile(
            backbone, args.data, args.train_examples, args.batch_size, args.max_length,
            [precision for precision in args.precision if precision in ("fp32", "bf16")], work_dir,
            args.threads)],
        "ablation": lambda: [bench_ablation(
            backbone, args.data, args.ablation_examples, args.batch_size, args.max_length,
            [precision for precision in args.precision if precision in ("fp32", "bf16")], work_dir,
            args.ablation_epochs, args.variants, args.threads)],
    }
    return runners[name]()


def training_share_of_peak(results: list[dict[str, Any]]) -> dict[str, float]:
    """Useful training FLOP/s over the matmul peak, estimated from the train and hardware results.

    Each runner's samples/s times the encoder's forward+backward FLOPs per SNIPS sentence, over
    the matmul peak in the training precision. Only real tokens count: the hardware batches'
    FLOPs are scaled by their share of non-padding tokens (the linear layers, nearly all the
    FLOPs at these lengths, scale with tokens), so padding a runner computes earns it nothing.
    """
    hardware = next((r for r in results if r["benchmark"] == "hardware"), None)
    if hardware is None:
        return {}
    rows = {(row["measure"], row["dtype"]): row for row in hardware["rows"]}
    real_share = 1.0 - hardware["ratios"]["padding_fraction"]
    estimates = {}
    for result in results:
        if result["benchmark"] not in LIKE_FOR_LIKE:
            continue
        precision = result["settings"]["precision"]
        peak = next(row["tflops"] for (measure, dtype), row in rows.items()
                    if measure.startswith("matmul") and dtype == precision) * 1e12
        per_sentence = rows[("forward+backward", precision)]["gflop_per_sentence"] * 1e9 * real_share
        for row in result["rows"]:
            key = f"{row['runner']} training {precision} / matmul peak (estimate, real tokens)"
            estimates[key] = round(row["train_samples_per_second"] * per_sentence / peak, 4)
    return estimates


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.benchmark == "summary":
        results = load_results(args.out)
        write_summary(results, args.out)
        return results
    names = BENCHMARKS if args.benchmark == "all" else (args.benchmark,)
    with tempfile.TemporaryDirectory(prefix="mtexp-bench-") as tmp:
        work_dir = (args.work_dir or Path(tmp)).resolve()
        backbone = backbone_folder(args.backbone, work_dir)
        results = []
        for name in names:
            for result in run_one(name, args, backbone, work_dir):
                write_result(result, args.out)
                results.append(result)
    if args.benchmark == "all":
        write_summary(results, args.out)
    return results


def load_results(out: Path) -> list[dict[str, Any]]:
    """The result files a session wrote to `out`, in benchmark order."""
    files = [out / f"{name}.json" for name in RESULT_NAMES]
    results = [json.loads(path.read_text()) for path in files if path.is_file()]
    if not results:
        raise SystemExit(f"no benchmark results (encode.json, train-*.json, ...) in {out}")
    return results


def write_summary(results: list[dict[str, Any]], out: Path) -> None:
    """summary.json / summary.md: the headline ratios (like for like, then default against
    default), every target met or missed, the training estimates; printed as well."""
    estimates = training_share_of_peak(results)
    verdicts = target_verdicts(results, estimates)
    accounting = speed_accounting(results)
    sections = headlines(results)
    for title, lines in sections.items():
        print(f"{title}:", *(f"  {line}" for line in lines), sep="\n")
    print("Targets:", *(f"  {v}" for v in verdicts), *(f"  estimate {k}: {v}" for k, v in estimates.items()),
          sep="\n")
    print("What the training speed target takes:", *(f"  {line}" for line in accounting), sep="\n")
    ratios = {result["benchmark"]: result["ratios"] for result in results}
    summary = {**ratios, "headlines": sections, "estimates": estimates, "targets": verdicts,
               "speed_accounting": accounting}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    written = header("summary", {})
    lines = [f"Written by `{written['command']}` on {written['date']} (git {written['git_revision']}) "
             "from the result files below; each names the command that measured it.", ""]
    for title, entries in sections.items():
        lines += [f"# {title}", "", *(f"- {entry}" for entry in entries), ""]
    lines += ["# Targets", "", *(f"- {verdict}" for verdict in verdicts), "",
              "# Estimates", "", *(f"- {key}: {value}" for key, value in estimates.items()), "",
              "# What the training speed target takes", "", *(f"- {line}" for line in accounting), ""]
    atomic_write_text(out / "summary.md", "\n".join(lines + [to_markdown(r) for r in results]))


if __name__ == "__main__":
    main()
