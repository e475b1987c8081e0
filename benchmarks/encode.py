"""encode: `SentenceEncoder.encode` against `SentenceTransformer.encode` on the same sentences."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import best_of, display_path, header, ratio

DEFAULT_SETTING = "mtexp default (precision=auto)"


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
    mtexp's default, `encode()` with no precision, is measured as a setting of its own.
    """
    from sentence_transformers import SentenceTransformer

    from mtexp.encoder import SentenceEncoder
    from mtexp.precision import resolve_precision

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

    def our_encode(precision: str | None) -> Callable[[], np.ndarray]:
        chosen = {} if precision is None else {"precision": precision}  # None: encode()'s default
        return lambda: ours.encode(sentences, batch_size=batch_size, show_progress=False, **chosen)

    candidates = {
        "sentence-transformers fp32": setting("sentence-transformers fp32", st_encode("fp32")),
        "sentence-transformers bf16-autocast": setting("sentence-transformers bf16-autocast",
                                                       st_encode("bf16")),
        "mtexp fp32": setting("mtexp fp32", our_encode("fp32")),
        "mtexp bf16": setting("mtexp bf16", our_encode("bf16")),
        DEFAULT_SETTING: setting(DEFAULT_SETTING, our_encode(None)),
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
    st_speed = by_name["sentence-transformers fp32"]["sentences_per_s"]
    default = by_name[DEFAULT_SETTING]
    result = header("encode", {"backbone": display_path(backbone), "sentences": len(sentences),
                               "batch_size": batch_size, "repeats": repeats, "device": device,
                               "max_length": ours.max_length,
                               "default_precision": resolve_precision("auto", device)})
    result["rows"] = rows
    result["ratios"] = {
        "mtexp_fp32_vs_st_fp32_speed": ratio(by_name["mtexp fp32"]["sentences_per_s"], st_speed),
        "mtexp_bf16_vs_st_bf16_speed": ratio(
            by_name["mtexp bf16"]["sentences_per_s"],
            by_name["sentence-transformers bf16-autocast"]["sentences_per_s"]),
        "mtexp_default_vs_st_default_speed": ratio(default["sentences_per_s"], st_speed),
        "mtexp_default_precision": resolve_precision("auto", device),
        "mtexp_default_min_cosine": default["min_cosine_to_st_fp32"],
        "mtexp_default_mean_cosine": default["mean_cosine_to_st_fp32"],
    }
    result["notes"] = [
        "Both encoders run the same weights, batch size and max length; each setting gets one "
        "warm-up call, then the best of the repeats (rounds interleave the settings).",
        "Like for like: mtexp fp32 against sentence-transformers fp32, and mtexp bf16 "
        "(encode(precision='bf16'): bfloat16 autocast inside, float32 embeddings out) against "
        "sentence-transformers' encode() inside the same torch.autocast.",
        "Default against default: encode() as called with no precision (precision='auto': bf16 where "
        "the CPU or GPU runs it natively, fp32 elsewhere) against SentenceTransformer.encode() as it "
        "comes (fp32); cosines are to the fp32 sentence-transformers embeddings.",
    ]
    return result
