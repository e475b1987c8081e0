"""What taking work out of mtexp's training loop would gain, in wall time.

    python benchmarks/ablation.py --train-examples 1000 --precision bf16 --out /tmp/ablation-bf16.json

A profiler splits an epoch by operator, but it also changes what it measures: under
`torch.profiler` the zero fill of the word-embedding gradient takes tens of milliseconds a step,
against about 1.5 ms for the same fill alone. So each variant here takes one kind of work out of
mtexp's training step altogether (or compiles the encoder) and is timed with nothing watching.
The variants are paired batch by batch: after a warm-up epoch, every batch of `--epochs` epochs
runs once per variant, back to back, in an order that rotates from batch to batch, so a slow spell
of a shared machine falls on all of them alike. The unchanged step's total time over a variant's
is the most that any faster implementation of the removed work could gain.
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
from common import display_path, header, run_script
from profile_epoch import build_trainer, loop_args, loop_parser, loop_settings
from training import RunSettings

from mtexp.distributed import shard_batch

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


class Variants:
    """Switches one built run between the variants, between steps; `step` runs one training step
    (forward, backward, then the optimizer step or, without one, the gradients dropped)."""

    def __init__(self, trainer: Any, compile_encoder: bool) -> None:
        self.trainer = trainer
        self.model = trainer.model
        self.dropouts = {module: module.p for module in self.model.modules()
                         if isinstance(module, torch.nn.Dropout)}
        self.words = self.model.encoder.embeddings.word_embeddings.weight
        self.eager = self.model.encoder.backbone
        self.compiled = torch.compile(self.eager, dynamic=True) if compile_encoder else None
        self.optimizer_steps: dict[str, int] = {}  # counted from the trainer's own step counter

    def use(self, variant: str) -> None:
        removals = REMOVALS.get(variant, ())
        for module, p in self.dropouts.items():  # BERT's attention reads its module's p too
            module.p = 0.0 if NO_DROPOUT in removals else p
        self.words.requires_grad_(FROZEN_WORDS not in removals)
        self.model.encoder.backbone = self.compiled if variant == COMPILED else self.eager

    def step(self, variant: str, batch: dict[str, Any]) -> float:
        """One step of `variant` on `batch`; its wall seconds."""
        trainer, removals = self.trainer, REMOVALS.get(variant, ())
        self.use(variant)
        steps_before = trainer.state.step
        started = time.perf_counter()
        with attention_kernels(variant):
            output = trainer.runner.forward(shard_batch(batch, trainer.context))
            output.loss.backward()
        if NO_STEP in removals:
            trainer.optimizer.zero_grad(set_to_none=True)
        else:
            trainer.optimizer_step()
        seconds = time.perf_counter() - started
        taken = trainer.state.step - steps_before
        self.optimizer_steps[variant] = self.optimizer_steps.get(variant, 0) + taken
        return seconds

    def facts(self, variant: str) -> dict[str, Any]:
        """What `variant` runs with, to show it took effect."""
        self.use(variant)
        return {"params_trainable": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                "max_dropout": max((module.p for module in self.dropouts), default=0.0),
                "optimizer_step": self.optimizer_steps.get(variant, 0) > 0}


def attention_kernels(variant: str) -> contextlib.AbstractContextManager[None]:
    """With dropout, scaled_dot_product_attention runs its math kernel; without, it would switch to
    a fused one (slower in bf16 on some CPUs), so the no-dropout variants keep the math kernel."""
    if NO_DROPOUT in REMOVALS.get(variant, ()):
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def time_variants(settings: RunSettings, variants: tuple[str, ...], epochs: int,
                  work: Path) -> dict[str, Any]:
    """A warm-up epoch of every variant, then each batch of `epochs` epochs once per variant, back
    to back, the order rotating by one from batch to batch; each variant's summed step seconds."""
    trainer = build_trainer(settings, work)
    switch = Variants(trainer, compile_encoder=COMPILED in variants)
    trainer.start()
    seconds = {variant: 0.0 for variant in variants}
    warmup = dict(seconds)
    steps = 0
    for epoch in range(1 + epochs):
        trainer.thawing.start_epoch(trainer.optimizer, epoch)
        for index, batch in enumerate(trainer.runner.epoch_batches(epoch).iterate()):
            turn = variants[index % len(variants):] + variants[:index % len(variants)]
            spent = warmup if epoch == 0 else seconds
            for variant in turn:
                spent[variant] += switch.step(variant, batch)
            steps += epoch > 0
    return {"steps_timed": steps, "seconds": {variant: round(seconds[variant], 3) for variant in variants},
            "warmup_seconds": {variant: round(warmup[variant], 3) for variant in variants},
            "facts": {variant: switch.facts(variant) for variant in variants}}


def bench_ablation(backbone: Path, data: Path, train_examples: int, batch_size: int, max_length: int,
                   precisions: list[str], work_dir: Path, epochs: int = 2,
                   variants: tuple[str, ...] = tuple(VARIANTS), threads: int | None = None) -> dict[str, Any]:
    """One fresh process per precision timing every variant on the same batches; a row per
    precision and variant with its seconds and its bound (the unchanged step's seconds over its)."""
    if AS_IS not in variants:
        raise ValueError(f"variants must include {AS_IS!r}, the step the others are compared with")
    rows, ratios = [], {}
    for precision in precisions:
        out = work_dir / "ablation" / f"ablation-{precision}.json"
        args = loop_args(__file__, backbone, data, train_examples, batch_size, max_length, precision, threads)
        run_script([*args, "--variants", ",".join(variants), "--epochs", str(epochs), "--out", str(out)],
                   out.with_suffix(".log"))
        timed = json.loads(out.read_text())
        for variant in variants:
            bound = round(timed["seconds"][AS_IS] / timed["seconds"][variant], 4)
            rows.append({"precision": precision, "variant": variant, "steps": timed["steps_timed"],
                         "seconds": timed["seconds"][variant], "bound": bound,
                         "warmup_seconds": timed["warmup_seconds"][variant], **timed["facts"][variant]})
            if variant != AS_IS:
                ratios[f"{precision} {variant}: bound"] = bound
    result = header("ablation", {"backbone": display_path(backbone), "data": display_path(data),
                                 "train_examples": train_examples, "batch_size": batch_size,
                                 "max_length": max_length, "precisions": precisions, "epochs": epochs,
                                 "threads": threads})
    result["rows"], result["ratios"] = rows, ratios
    result["notes"] = [
        "One fresh process per precision builds mtexp's full fine-tuning run and trains a warm-up "
        "epoch of every variant; then every batch of the timed epochs runs once per variant, back to "
        "back, the order rotating from batch to batch (a slow spell of the machine falls on all "
        "variants alike). seconds: a variant's steps (forward, backward, optimizer step) summed.",
        *(f"{variant}: {VARIANTS[variant]}." for variant in variants),
        "bound = as is seconds / the variant's: the most that doing the removed work faster could "
        "speed the step up. Variants that remove work train nothing useful; they only time the rest.",
    ]
    return result


def variant_list(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown or AS_IS not in chosen:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(VARIANTS)}, {AS_IS!r} among "
                                         f"them; got {text!r}")
    return chosen


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = loop_parser(__doc__.splitlines()[0])
    parser.add_argument("--variants", type=variant_list, default=tuple(VARIANTS),
                        help="comma-separated, 'as is' among them")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up epoch")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mtexp-ablation-") as tmp:
        work = Path(tmp)
        settings = loop_settings(args, work, epochs=1 + args.epochs)
        timed = time_variants(settings, args.variants, args.epochs, work)
    result = {"precision": args.precision, **timed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["seconds"]))
    return result


if __name__ == "__main__":
    main()
