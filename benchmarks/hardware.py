"""hardware: peak matmul FLOP/s of this machine, and the share of it the encoder achieves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import best_of, display_path, header, ratio
from encode import autocast_for
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronized(fn: Callable[[], Any]) -> Callable[[], None]:
    def call() -> None:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    return call


def peak_matmul(size: int, repeats: int) -> dict[str, float]:
    """Best FLOP/s of a `size` x `size` matmul per dtype (2 * size^3 FLOPs each)."""
    peaks = {}
    for name, dtype in DTYPES.items():
        a = torch.randn(size, size, device=device()).to(dtype)
        b = torch.randn(size, size, device=device()).to(dtype)
        elapsed = best_of({name: synchronized(lambda a=a, b=b: torch.matmul(a, b))}, repeats)[name]
        peaks[name] = 2 * size**3 / elapsed
    return peaks


def length_grouped_batches(tokenizer: Any, sentences: list[str], batch_size: int,
                           max_length: int) -> list[dict[str, torch.Tensor]]:
    """Tokenised batches of similar length, as the training loop and `encode()` build them."""
    order = np.argsort([len(s) for s in sentences], kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [sentences[i] for i in order[start : start + batch_size]]
        encoded = tokenizer(chunk, padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
        batches.append({key: value.to(device()) for key, value in encoded.items()})
    return batches


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def model_passes(encoder: Any, batches: list[dict[str, torch.Tensor]]) -> dict[str, Callable[[], None]]:
    def forward() -> None:
        encoder.eval()
        with torch.inference_mode():
            for batch in batches:
                encoder(**batch)

    def forward_backward() -> None:
        encoder.train()
        for batch in batches:
            encoder(**batch).token_states.float().square().mean().backward()
        encoder.zero_grad(set_to_none=True)

    return {"forward": synchronized(forward), "forward+backward": synchronized(forward_backward)}


def bench_hardware(backbone: Path, sentences: list[str], batch_size: int = 32, max_length: int = 64,
                   matmul_size: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """Model FLOP/s (counted by FlopCounterMode on the padded batches) over the matmul peak."""
    from mtexp.encoder import SentenceEncoder

    peaks = peak_matmul(matmul_size, repeats)
    encoder = SentenceEncoder.from_pretrained(str(backbone), max_length=max_length).to(device())
    batches = length_grouped_batches(encoder.tokenizer, sentences, batch_size, max_length)
    tokens = sum(int(b["attention_mask"].numel()) for b in batches)
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    passes = model_passes(encoder, batches)

    def encode_pass(precision: str) -> Callable[[], None]:
        return synchronized(lambda: encoder.encode(sentences, batch_size=64, show_progress=False,
                                                   precision=precision))
    rows = [{"measure": f"matmul {matmul_size}x{matmul_size}", "dtype": name, "tflops": round(peak / 1e12, 4),
             "fraction_of_peak": 1.0} for name, peak in peaks.items()]
    ratios: dict[str, Any] = {}
    for precision in DTYPES:
        for name, fn in {**passes, "encode()": encode_pass(precision)}.items():
            with autocast_for(precision):
                flops = count_flops(fn)
                elapsed = best_of({name: fn}, repeats)[name]
            achieved = flops / elapsed
            rows.append({"measure": name, "dtype": precision, "tflops": round(achieved / 1e12, 4),
                         "fraction_of_peak": ratio(achieved, peaks[precision]),
                         "gflop": round(flops / 1e9, 2), "seconds": round(elapsed, 4),
                         "gflop_per_sentence": round(flops / 1e9 / len(sentences), 5)})
            ratios[f"{name} {precision} / matmul peak"] = ratio(achieved, peaks[precision])
    ratios["padding_fraction"] = ratio(tokens - real_tokens, tokens)
    result = header("hardware", {"backbone": display_path(backbone), "sentences": len(sentences),
                                 "batch_size": batch_size, "max_length": max_length,
                                 "matmul_size": matmul_size, "repeats": repeats, "device": str(device())})
    result["rows"] = rows
    result["ratios"] = ratios
    result["notes"] = [
        "Peak: best of the repeats of torch.matmul on square matrices, 2*n^3 FLOPs, in-process.",
        "Model FLOPs: torch.utils.flop_counter.FlopCounterMode over one pass (matmuls and attention, "
        "padded shapes, i.e. the work done); forward runs in eval mode under inference_mode, "
        "forward+backward in train mode with a mean-square loss on the token states.",
        "bf16 rows run under torch.autocast (encode(precision='bf16') for encode()) and are compared "
        "with the bf16 matmul peak. encode() includes tokenisation, as a user sees it (batch size 64).",
    ]
    return result
