"""How far training moved the encoder: layer-wise linear CKA and STS-B embedding quality."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

STS_FIELDS = 7
MAX_STS_SCORE = 5.0


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between `(n, d1)` and `(n, d2)` features, in float64.

    Invariant to orthogonal transforms and isotropic scaling; 1.0 for identical features.
    """
    x64 = torch.as_tensor(x).detach().to("cpu", torch.float64)
    y64 = torch.as_tensor(y).detach().to("cpu", torch.float64)
    if x64.ndim != 2 or y64.ndim != 2:
        raise ValueError(
            f"linear_cka takes 2-D features, got shapes {tuple(x64.shape)} and {tuple(y64.shape)}"
        )
    if x64.shape[0] != y64.shape[0]:
        raise ValueError(f"linear_cka needs the same rows: {x64.shape[0]} vs {y64.shape[0]}")
    if x64.shape[0] < 2:
        raise ValueError("linear_cka needs at least two examples")
    x64 = x64 - x64.mean(dim=0, keepdim=True)
    y64 = y64 - y64.mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(y64.T @ x64) ** 2
    norm_x = torch.linalg.matrix_norm(x64.T @ x64)
    norm_y = torch.linalg.matrix_norm(y64.T @ y64)
    if norm_x == 0 or norm_y == 0:
        raise ValueError("linear_cka is undefined for constant features")
    return float(cross / (norm_x * norm_y))


def sample_sentences(sentences: Sequence[str], n: int = 256, seed: int = 0) -> list[str]:
    """A fixed, seeded sample of `n` sentences in their original order (all of them if fewer)."""
    if len(sentences) <= n:
        return list(sentences)
    chosen = np.sort(np.random.default_rng(seed).choice(len(sentences), size=n, replace=False))
    return [sentences[i] for i in chosen]


def layer_cka(
    encoder_before: nn.Module,
    encoder_after: nn.Module,
    inputs: Sequence[str] | Iterable[Mapping[str, torch.Tensor]],
    batch_size: int = 32,
    max_tokens: int | None = 4096,
    seed: int = 0,
) -> dict[str, float]:
    """Token-level linear CKA per layer between two encoders on the same inputs.

    `inputs` are sentences (tokenised with `encoder_before`'s tokenizer) or batches with
    `input_ids` and `attention_mask`. Padding is dropped; at most `max_tokens` real tokens are
    kept (seeded subsample). Returns `layer_0` (embeddings output) .. `layer_L` and `mean`.
    """
    batches = list(_as_batches(encoder_before, inputs, batch_size))
    states_before = _collect_states(encoder_before, batches)
    states_after = _collect_states(encoder_after, batches)
    if len(states_before) != len(states_after):
        raise ValueError(
            f"the encoders have {len(states_before)} and {len(states_after)} hidden-state layers"
        )
    n_tokens = states_before[0].shape[0]
    keep = None
    if max_tokens is not None and n_tokens > max_tokens:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(n_tokens, generator=generator)[:max_tokens].sort().values
    result = {}
    for layer, (before, after) in enumerate(zip(states_before, states_after, strict=True)):
        if keep is not None:
            before, after = before[keep], after[keep]
        result[f"layer_{layer}"] = linear_cka(before, after)
    result["mean"] = float(np.mean(list(result.values())))
    return result


def _as_batches(
    encoder: nn.Module,
    inputs: Sequence[str] | Iterable[Mapping[str, torch.Tensor]],
    batch_size: int,
) -> Iterable[Mapping[str, torch.Tensor]]:
    if isinstance(inputs, str):
        raise TypeError("layer_cka takes a list of sentences or batches, not a single string")
    if isinstance(inputs, Sequence) and inputs and isinstance(inputs[0], str):
        for start in range(0, len(inputs), batch_size):
            yield encoder.tokenize(list(inputs[start : start + batch_size]))
    else:
        yield from inputs


@torch.inference_mode()
def _collect_states(
    encoder: nn.Module, batches: list[Mapping[str, torch.Tensor]]
) -> list[torch.Tensor]:
    """Every layer's hidden states at the real (non-padding) tokens, concatenated, on CPU."""
    if not batches:
        raise ValueError("layer_cka got no inputs")
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    per_layer: list[list[torch.Tensor]] = []
    try:
        for batch in batches:
            mask = batch["attention_mask"].to(device).bool()
            output = encoder(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                token_type_ids=_optional(batch, "token_type_ids", device),
                output_hidden_states=True,
            )
            if not per_layer:
                per_layer = [[] for _ in output.hidden_states]
            for layer, states in enumerate(output.hidden_states):
                per_layer[layer].append(states[mask].float().cpu())
    finally:
        encoder.train(was_training)
    return [torch.cat(chunks) for chunks in per_layer]


def _optional(
    batch: Mapping[str, torch.Tensor], key: str, device: torch.device
) -> torch.Tensor | None:
    value = batch.get(key)
    return None if value is None else value.to(device)


def sts_file(path: str | Path, split: str = "test") -> Path:
    """`path` itself when it is a file, else `<path>/sts-<split>.csv`."""
    path = Path(path).expanduser()
    return path if path.is_file() else path / f"sts-{split}.csv"


def load_sts(path: str | Path, split: str = "test") -> tuple[list[str], list[str], np.ndarray]:
    """STS-B pairs and gold scores from a folder (`sts-<split>.csv`) or a file.

    Tab-separated, no header, no quoting: genre, filename, year, id, score, sentence1,
    sentence2, then optional fields that are ignored.
    """
    file = sts_file(path, split)
    if not file.is_file():
        raise FileNotFoundError(f"no STS-B file at {file}")
    first, second, scores = [], [], []
    for number, raw in enumerate(file.read_bytes().split(b"\n"), start=1):
        line = raw.decode("utf-8").rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < STS_FIELDS:
            raise ValueError(
                f"{file}:{number}: expected at least {STS_FIELDS} tab-separated fields, "
                f"got {len(fields)}"
            )
        try:
            score = float(fields[4])
        except ValueError:
            raise ValueError(f"{file}:{number}: score {fields[4]!r} is not a number") from None
        if not 0.0 <= score <= MAX_STS_SCORE:
            raise ValueError(f"{file}:{number}: score {score} is outside [0, {MAX_STS_SCORE:g}]")
        first.append(fields[5])
        second.append(fields[6])
        scores.append(score)
    if not scores:
        raise ValueError(f"{file} holds no sentence pairs")
    return first, second, np.asarray(scores, dtype=np.float64)


def sts_spearman(
    encoder: nn.Module,
    path: str | Path,
    split: str = "test",
    max_pairs: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    show_progress: bool = False,
) -> float:
    """Spearman correlation between embedding cosine similarity and STS-B gold scores.

    With `max_pairs`, a seeded sample of that many pairs is scored.
    """
    first, second, gold = load_sts(path, split)
    if max_pairs is not None and max_pairs < len(gold):
        chosen = np.sort(
            np.random.default_rng(seed).choice(len(gold), size=max_pairs, replace=False)
        )
        first, second, gold = [first[i] for i in chosen], [second[i] for i in chosen], gold[chosen]
    unique = sorted(set(first) | set(second))
    index = {sentence: i for i, sentence in enumerate(unique)}
    embeddings = np.asarray(
        encoder.encode(unique, batch_size=batch_size, normalize=False, show_progress=show_progress,
                       precision="fp32"),  # a measurement: the same on every machine
        dtype=np.float64,
    )
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings = embeddings / np.maximum(norms, 1e-12)
    left = embeddings[[index[s] for s in first]]
    right = embeddings[[index[s] for s in second]]
    cosine = np.sum(left * right, axis=1)
    return float(spearmanr(cosine, gold).statistic)
