"""What taking work out of mtexp's training loop would gain, in wall time.

    python benchmarks/ablation.py --train-examples 1000 --precision bf16 --variant "no dropout" --out /tmp/a

A profiler splits an epoch by operator, but it also changes what it measures: under
`torch.profiler` the zero fill of the word-embedding gradient takes tens of milliseconds a step,
against about 1.5 ms for the same fill alone. So each variant here takes one kind of work out of
mtexp's training loop altogether (or compiles the encoder), trains a warm-up epoch, then times
`--epochs` epochs with nothing watching. The unchanged loop's epoch time over a variant's is the
most that any faster implementation of the removed work could gain.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, backbone_folder, display_path, header, run_script
from profile_epoch import build_trainer
from training import RunSettings

AS_IS, ALL_REMOVED, COMPILED = "as is", "all three removed", "compiled encoder"
NO_DROPOUT, FROZEN_WORDS, NO_STEP = "no dropout", "word embeddings frozen", "no optimizer step"
VARIANTS: dict[str, str] = {
    AS_IS: "mtexp's training loop unchanged",
    NO_DROPOUT: "every dropout probability set to 0 (hidden states, attention, heads), attention kept on "
                "the math kernel that dropout runs on: no masks drawn; the most a faster dropout could gain",
    FROZEN_WORDS: "the 30,522 x 384 word-embedding table frozen: no gradient for it, no zero fill, "
                  "11.7M fewer parameters in AdamW; the most a sparse or kept embedding gradient could gain",
    NO_STEP: "gradients computed, then dropped: no clipping, no AdamW; the most a faster optimizer "
             "could gain",
    ALL_REMOVED: "the three above together",
    COMPILED: "torch.compile of the encoder (dynamic shapes); its compilation falls in the warm-up epoch",
}
REMOVALS = {NO_DROPOUT: (NO_DROPOUT,), FROZEN_WORDS: (FROZEN_WORDS,), NO_STEP: (NO_STEP,),
            ALL_REMOVED: (NO_DROPOUT, FROZEN_WORDS, NO_STEP)}


def slug(variant: str) -> str:
    return variant.replace(" ", "-")


def apply_variant(trainer: Any, variant: str) -> None:
    """Change the built run as `variant` says (once, before training)."""
    model = trainer.model
    removals = REMOVALS.get(variant, ())
    if NO_DROPOUT in removals:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):  # BERT's attention reads its module's p too
                module.p = 0.0
    if NO_STEP in removals:
        trainer.optimizer_step = lambda: trainer.optimizer.zero_grad(set_to_none=True)
    if variant == COMPILED:
        model.encoder.backbone = torch.compile(model.encoder.backbone, dynamic=True)


def start_epoch(trainer: Any, variant: str, epoch: int) -> None:
    """The scenario's thawing for `epoch`, then the variant's freezing on top of it (the thawing
    sets every parameter of `freezing=none` trainable again)."""
    trainer.thawing.start_epoch(trainer.optimizer, epoch)
    if FROZEN_WORDS in REMOVALS.get(variant, ()):
        trainer.model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)


FACTS = ("optimizer_steps", "params_trainable", "max_dropout")


def what_ran(trainer: Any) -> dict[str, Any]:
    """Facts that show the variant took effect."""
    model = trainer.model
    dropout = [module.p for module in model.modules() if isinstance(module, torch.nn.Dropout)]
    return {"optimizer_steps": trainer.state.step,
            "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "max_dropout": max(dropout, default=0.0)}


def attention_kernels(variant: str) -> contextlib.AbstractContextManager[None]:
    """With dropout, scaled_dot_product_attention runs its math kernel; without, it would switch to
    a fused one (slower in bf16 on some CPUs), so the no-dropout variants keep the math kernel."""
    if NO_DROPOUT in REMOVALS.get(variant, ()):
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def time_epochs(settings: RunSettings, variant: str, epochs: int, work: Path) -> dict[str, Any]:
    trainer = build_trainer(settings, work, epochs=1 + epochs)
    apply_variant(trainer, variant)
    trainer.start()
    seconds = []
    for epoch in range(1 + epochs):
        start_epoch(trainer, variant, epoch)
        trainer.state.batches_done = 0
        started = time.perf_counter()
        with attention_kernels(variant):
            trainer.run_batches(trainer.runner.epoch_batches(epoch), epoch)  # no dev scoring
        seconds.append(time.perf_counter() - started)
    return {"warmup_seconds": round(seconds[0], 3), "epoch_seconds": [round(s, 3) for s in seconds[1:]],
            **what_ran(trainer)}


def bench_ablation(backbone: Path, data: Path, train_examples: int, batch_size: int, max_length: int,
                   precisions: list[str], work_dir: Path, rounds: int = 3, epochs: int = 2,
                   variants: tuple[str, ...] = tuple(VARIANTS), threads: int | None = None) -> dict[str, Any]:
    """Every variant in a fresh process per precision, `rounds` interleaved rounds; a row per
    precision and variant with its fastest epoch, and each variant's bound: the unchanged loop's
    fastest epoch over the variant's."""
    if AS_IS not in variants:
        raise ValueError(f"variants must include {AS_IS!r}, the loop the others are compared with")
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_index in range(rounds):
        for precision in precisions:
            for variant in variants:
                out = work_dir / "ablation" / f"{precision}-{slug(variant)}-{round_index}.json"
                args = [__file__, "--backbone", str(backbone), "--data", str(data),
                        "--train-examples", str(train_examples), "--batch-size", str(batch_size),
                        "--max-length", str(max_length), "--precision", precision, "--variant", variant,
                        "--epochs", str(epochs), "--out", str(out)]
                args += ["--threads", str(threads)] if threads else []
                run_script(args, out.with_suffix(".log"))
                runs.setdefault((precision, variant), []).append(json.loads(out.read_text()))
    rows, ratios = ablation_rows(runs, precisions, variants)
    result = header("ablation", {"backbone": display_path(backbone), "data": display_path(data),
                                 "train_examples": train_examples, "batch_size": batch_size,
                                 "max_length": max_length, "precisions": precisions, "rounds": rounds,
                                 "epochs": epochs, "threads": threads})
    result["rows"], result["ratios"] = rows, ratios
    result["notes"] = [
        "Each variant runs mtexp's full fine-tuning loop (forward, backward, optimizer steps; no dev "
        "scoring) in a fresh process: one warm-up epoch, then the timed epochs; epoch_seconds is "
        "its fastest timed epoch over the rounds, which interleave the variants.",
        *(f"{variant}: {VARIANTS[variant]}." for variant in variants),
        "bound = as is epoch_seconds / the variant's: the most that doing the removed work faster "
        "could speed the loop up. Variants that remove work do not train the same model; they only "
        "time the rest.",
    ]
    return result


def ablation_rows(runs: dict[tuple[str, str], list[dict[str, Any]]], precisions: list[str],
                  variants: tuple[str, ...]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    rows, ratios = [], {}
    for precision in precisions:
        fastest = {variant: min(min(run["epoch_seconds"]) for run in runs[(precision, variant)])
                   for variant in variants}
        for variant in variants:
            done = runs[(precision, variant)]
            bound = round(fastest[AS_IS] / fastest[variant], 4)
            rows.append({"precision": precision, "variant": variant, "epoch_seconds": fastest[variant],
                         "bound": bound, "warmup_seconds": min(run["warmup_seconds"] for run in done),
                         "rounds_epoch_seconds": [min(run["epoch_seconds"]) for run in done],
                         **{fact: done[0][fact] for fact in FACTS}})
            if variant != AS_IS:
                ratios[f"{precision} {variant}: bound"] = bound
    return rows, ratios


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train-examples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--variant", choices=tuple(VARIANTS), default=AS_IS)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up epoch")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="mtexp-ablation-") as tmp:
        work = Path(tmp)
        settings = RunSettings(backbone_folder(args.backbone, work), args.data, args.train_examples,
                               1 + args.epochs, args.batch_size, args.max_length, precision=args.precision,
                               threads=args.threads, cache_root=work / "cache")
        timed = time_epochs(settings, args.variant, args.epochs, work)
    result = {"precision": args.precision, "variant": args.variant, **timed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
