"""Frozen-feature cache: run a frozen encoder once, then train the heads on its stored outputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

Group = tuple[str, str | None]  # (corpus, split)


def _key_groups(batch: Mapping, size: int, split: str | None = None) -> list[Group]:
    """Each example's (corpus, split); split from the argument, else the batch's "split" key."""
    split = split if split is not None else batch.get("split")
    corpus = batch["corpus"]
    corpora = [corpus] * size if isinstance(corpus, str) else [str(name) for name in corpus]
    splits = [split] * size if split is None or isinstance(split, str) else [str(s) for s in split]
    return list(zip(corpora, splits, strict=True))


def _describe(group: Group) -> str:
    corpus, split = group
    return repr(corpus) if split is None else f"{corpus!r}/{split}"


def _check_right_padded(mask: torch.Tensor) -> None:
    if mask.shape[1] > 1 and bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError("FeatureCache needs right-padded batches (attention_mask 1s then 0s)")


class FeatureCache:
    """Per example: unpadded token states and the pooled vector, keyed by (corpus, split, example_index).

    `example_index` counts within one split, so batches of several splits must say which
    (a "split" key in the batch, or the `split` argument); without one the split is None.
    Token states of all examples live in one flat `(total_tokens, H)` tensor; example `r`
    owns rows `offsets[r] : offsets[r] + lengths[r]`.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        pooled: torch.Tensor,
        keys: Sequence[tuple[Group, int]],
    ) -> None:
        self.tokens = tokens
        self.lengths = lengths.to(device=tokens.device, dtype=torch.long)
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self.pooled = pooled
        self._rows = self._index(keys, tokens.device)

    @staticmethod
    def _index(keys: Sequence[tuple[Group, int]], device: torch.device) -> dict[Group, torch.Tensor]:
        """Per (corpus, split), a lookup tensor example_index -> row (-1 where absent)."""
        per_group: dict[Group, list[tuple[int, int]]] = {}
        for row, (group, index) in enumerate(keys):
            per_group.setdefault(group, []).append((int(index), row))
        rows = {}
        for group, pairs in per_group.items():
            indices = torch.tensor([index for index, _ in pairs], dtype=torch.long)
            positions = torch.tensor([row for _, row in pairs], dtype=torch.long)
            if len(indices.unique()) < len(indices):
                raise ValueError(
                    f"example_index repeats in {_describe(group)}: batches of several splits "
                    "need a 'split' key (or one cache per split)"
                )
            table = torch.full((int(indices.max()) + 1,), -1, dtype=torch.long)
            table[indices] = positions
            rows[group] = table.to(device)
        return rows

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        encoder: nn.Module,
        batches: Iterable[Mapping],
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
        store_device: torch.device | str | None = None,
        split: str | None = None,
    ) -> FeatureCache:
        """Run `encoder` in eval mode over `batches` once (no grad) and keep its outputs.

        Stored on `store_device` (default: `device`) in `dtype`. `split` names the split of
        batches without a "split" key.
        """
        store_device = torch.device(store_device if store_device is not None else device)
        batches = list(batches)
        if not batches:
            raise ValueError("FeatureCache.build got no batches")
        masks = [batch["attention_mask"] for batch in batches]
        for mask in masks:
            _check_right_padded(mask)
        lengths = torch.cat([mask.sum(1) for mask in masks]).to(store_device, torch.long)
        # Preallocated storage: each batch's outputs go straight to their rows, so nothing kept
        # sits between the freed activations of later batches, and no final concatenation copy.
        tokens: torch.Tensor | None = None
        pooled: torch.Tensor | None = None
        keys: list[tuple[Group, int]] = []
        token_row = example_row = 0
        was_training = encoder.training
        encoder.eval()
        try:
            for batch, mask in zip(batches, masks, strict=True):
                mask = mask.to(device)
                type_ids = batch.get("token_type_ids")
                out = encoder(
                    batch["input_ids"].to(device),
                    mask,
                    type_ids.to(device) if type_ids is not None else None,
                )
                if tokens is None or pooled is None:
                    hidden = out.token_states.shape[-1]
                    tokens = torch.empty(int(lengths.sum()), hidden, dtype=dtype, device=store_device)
                    pooled = torch.empty(len(lengths), hidden, dtype=dtype, device=store_device)
                states = out.token_states[mask.bool()]
                tokens[token_row : token_row + len(states)] = states
                pooled[example_row : example_row + len(mask)] = out.pooled
                token_row += len(states)
                example_row += len(mask)
                indices = torch.as_tensor(batch["example_index"]).tolist()
                keys.extend(zip(_key_groups(batch, len(indices), split), indices, strict=True))
        finally:
            encoder.train(was_training)
        assert tokens is not None and pooled is not None
        return cls(tokens, lengths, pooled, keys)

    def keys(self) -> list[tuple[Group, int]]:
        """Each row's `((corpus, split), example_index)`, in row order (what `__init__` took)."""
        keys: list[tuple[Group, int] | None] = [None] * len(self)
        for group, table in self._rows.items():
            indices = torch.nonzero(table >= 0).flatten()
            for index, row in zip(indices.tolist(), table[indices].tolist(), strict=True):
                keys[row] = (group, index)
        return keys  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.lengths.numel())

    @property
    def hidden_size(self) -> int:
        return int(self.pooled.shape[1])

    def rows_for(self, batch: Mapping, split: str | None = None) -> torch.Tensor:
        """Cache rows of the batch's examples, in batch order."""
        indices = torch.as_tensor(batch["example_index"], dtype=torch.long).to(self.tokens.device)
        groups = _key_groups(batch, len(indices), split)
        rows = torch.empty_like(indices)
        for group in dict.fromkeys(groups):
            table = self._rows.get(group)
            if table is None:
                raise KeyError(f"{_describe(group)} is not in the feature cache")
            select = torch.tensor([g == group for g in groups], device=indices.device)
            wanted = indices[select]
            found = table[wanted.clamp(max=len(table) - 1)]
            if bool(((wanted >= len(table)) | (found < 0)).any()):
                raise KeyError(f"some examples of {_describe(group)} are not in the feature cache")
            rows[select] = found
        return rows

    def features_for(
        self,
        batch: Mapping,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = torch.float32,
        split: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(token_states (B, T, H) zero-padded to the batch's T, pooled (B, H))` for `batch`."""
        rows = self.rows_for(batch, split)
        mask = batch["attention_mask"]
        lengths = self.lengths[rows]
        if not torch.equal(lengths, mask.sum(1).to(lengths.device)):
            raise ValueError("cached token counts differ from the batch: stale cache?")
        width = mask.shape[1]
        positions = torch.arange(width, device=rows.device)
        valid = positions[None, :] < lengths[:, None]
        flat = (self.offsets[rows][:, None] + positions[None, :])[valid]
        token_states = self.tokens.new_zeros(len(rows), width, self.hidden_size)
        token_states[valid] = self.tokens[flat]
        pooled = self.pooled[rows]
        return token_states.to(device, dtype), pooled.to(device, dtype)

    def memory_bytes(self) -> int:
        """Bytes held by the stored tensors."""
        tensors = (self.tokens, self.pooled, self.lengths, self.offsets)
        return sum(t.numel() * t.element_size() for t in tensors)

    @staticmethod
    def estimate_bytes(
        total_tokens: int, num_examples: int, hidden_size: int, dtype: torch.dtype = torch.float32
    ) -> int:
        """Bytes a cache of `total_tokens` non-padding tokens over `num_examples` examples takes."""
        item = torch.empty((), dtype=dtype).element_size()
        return (total_tokens + num_examples) * hidden_size * item + 2 * num_examples * 8
