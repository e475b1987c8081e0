"""Pooling of token states into one fixed-length vector per sentence.

Every mode ignores padded positions, so a sentence's embedding does not depend on the other
sentences of its batch.
"""

from __future__ import annotations

import torch

POOLING_MODES = ("mean", "cls", "max")


def mean_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the unmasked token states: sum(m * h) / max(sum(m), 1e-9)."""
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    summed = (token_states * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


def cls_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """State of the first token (BERT's [CLS]); the mask is not needed for it."""
    del attention_mask
    return token_states[:, 0]


def max_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over the unmasked token states."""
    mask = attention_mask.unsqueeze(-1).bool()
    lowest = torch.finfo(token_states.dtype).min
    return token_states.masked_fill(~mask, lowest).max(dim=1).values


_POOLERS = {"mean": mean_pool, "cls": cls_pool, "max": max_pool}


def pool(token_states: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool `(batch, tokens, hidden)` states into `(batch, hidden)` with the named mode."""
    check_pooling_mode(mode)
    return _POOLERS[mode](token_states, attention_mask)


def check_pooling_mode(mode: str) -> None:
    if mode not in _POOLERS:
        raise ValueError(f"unknown pooling mode {mode!r}: expected one of {', '.join(POOLING_MODES)}")
