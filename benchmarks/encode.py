"""encode: `SentenceEncoder.encode` against `SentenceTransformer.encode` on the same sentences."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import best_of, display_path, header, ratio

MIN_COSINE = 0.999


def autocast_for(precision: str) -> AbstractContextManager:
    """bfloat16 `torch.autocast` for "bf16", nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device_type="cuda" if torch.cuda.is_available() else "cpu",
                              dtype=torch.bfloat16)
    return nullcontext()


def cosines(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    a = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def bench_encode(backbone: Path, sentences: list[str], batch_size: int = 64,
                 repeats: int = 3) -> dict[str, Any]:
    """Sentences/s of both encoders in fp32 and bf16, best of `repeats` after a warm-up.

    mtexp in bf16 is `encode(precision="bf16")`; sentence-transformers runs under `torch.autocast`.
    """
    from sentence_transformers import SentenceTransformer

    from mtexp.encoder import SentenceEncoder

    device = "cuda" if torch.cuda.is_available() else "cpu"
    reference = SentenceTransformer(str(backbone), device=device)
    ours = SentenceEncoder.from_pretrained(str(backbone), max_length=reference.max_seq_length).to(device)
    ours.eval()
    outputs: dict[str, np.ndarray] = {}

    def setting(name: str, encode: Callable[[], np.ndarray]) -> Callable[[], None]:
        def call() -> None:
            outputs[name] = np.asarray(encode(), dtype=np.float32)
        return call

    def st_encode(precision: str) -> Callable[[], np.ndarray]:
        def call() -> np.ndarray:
            with autocast_for(precision):
                return reference.encode(sentences, batch_size=batch_size, show_progress_bar=False)
        return call

    def our_encode(precision: str) -> Callable[[], np.ndarray]:
        return lambda: ours.encode(sentences, batch_size=batch_size, show_progress=False, precision=precision)

    candidates = {
        "sentence-transformers fp32": setting("sentence-transformers fp32", st_encode("fp32")),
        "sentence-transformers bf16-autocast": setting("sentence-transformers bf16-autocast",
                                                       st_encode("bf16")),
        "mtexp fp32": setting("mtexp fp32", our_encode("fp32")),
        "mtexp bf16": setting("mtexp bf16", our_encode("bf16")),
    }
    times = best_of(candidates, repeats)
    fp32 = outputs["sentence-transformers fp32"]
    rows = []
    for name, elapsed in times.items():
        cos = cosines(outputs[name], fp32)
        rows.append({"setting": name, "seconds": round(elapsed, 3),
                     "sentences_per_s": round(len(sentences) / elapsed, 1),
                     "mean_cosine_to_st_fp32": round(float(cos.mean()), 6),
                     "min_cosine_to_st_fp32": round(float(cos.min()), 6)})
    by_name = {row["setting"]: row for row in rows}
    accurate = [row for row in rows if row["setting"].startswith("mtexp")
                and row["min_cosine_to_st_fp32"] >= MIN_COSINE]
    best = max(accurate or rows[2:], key=lambda row: row["sentences_per_s"])
    st_speed = by_name["sentence-transformers fp32"]["sentences_per_s"]
    result = header("encode", {"backbone": display_path(backbone), "sentences": len(sentences),
                               "batch_size": batch_size, "repeats": repeats, "device": device,
                               "max_length": ours.max_length})
    result["rows"] = rows
    result["ratios"] = {
        "mtexp_fastest_setting": best["setting"],
        "mtexp_fastest_vs_st_fp32_speed": ratio(best["sentences_per_s"], st_speed),
        "mtexp_fastest_mean_cosine": best["mean_cosine_to_st_fp32"],
        "mtexp_fastest_min_cosine": best["min_cosine_to_st_fp32"],
        "mtexp_fp32_vs_st_fp32_speed": ratio(by_name["mtexp fp32"]["sentences_per_s"], st_speed),
        "mtexp_bf16_vs_st_bf16_speed": ratio(
            by_name["mtexp bf16"]["sentences_per_s"],
            by_name["sentence-transformers bf16-autocast"]["sentences_per_s"]),
    }
    result["notes"] = [
        "Both encoders run the same weights, batch size and max length; each setting gets one "
        "warm-up call, then the best of the repeats (rounds interleave the settings).",
        "mtexp bf16 is encode(precision='bf16') (bfloat16 autocast inside, float32 embeddings out); "
        "sentence-transformers bf16 runs its encode() inside torch.autocast. The "
        f"fastest mtexp setting is chosen among those with min cosine >= {MIN_COSINE} to fp32 "
        "sentence-transformers.",
    ]
    return result
