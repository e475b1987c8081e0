"""Columnar feature tables and the collator: vectorised gather + dynamic padding into tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

LABEL_PREFIX = "labels."
IGNORE_INDEX = -100
# Padding value per ragged column; label columns pad with IGNORE_INDEX.
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "word_ids": -1}
UNK_COLUMN = "unk_words"  # per-example count of words that had no sub-token (kept for stats)
STATS_COLUMNS = (UNK_COLUMN,)  # dataset columns that never go into a batch


@dataclass
class Ragged:
    """Variable-length rows stored flat: row i is `values[offsets[i]:offsets[i + 1]]`."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]]) -> Ragged:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]) if rows else (
            np.zeros(0, dtype=np.int64))
        return cls(values=values, offsets=offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def pad(self, index: np.ndarray, pad_value: int) -> np.ndarray:
        """Rows `index` as a `(len(index), longest)` array filled with `pad_value`."""
        starts = self.offsets[index]
        lengths = self.offsets[index + 1] - starts
        width = int(lengths.max()) if len(index) else 0
        steps = np.arange(width)
        mask = steps < lengths[:, None]
        positions = np.where(mask, starts[:, None] + steps, 0)
        return np.where(mask, self.values[positions] if len(self.values) else 0, pad_value)


class Table:
    """Columns of one (corpus, split): `Ragged` token columns and 1-D per-example columns."""

    def __init__(self, columns: Mapping[str, Ragged | np.ndarray]) -> None:
        self.columns = dict(columns)
        self.lengths = self.columns["input_ids"].lengths

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_arrow(cls, table: Any, skip: Sequence[str] = STATS_COLUMNS) -> Table:
        """From a pyarrow table (a `datasets.Dataset`'s `.data.table`), without Python loops."""
        columns: dict[str, Ragged | np.ndarray] = {}
        for name in table.column_names:
            if name in skip:
                continue
            array = table.column(name).combine_chunks()
            if hasattr(array, "offsets"):
                offsets = array.offsets.to_numpy().astype(np.int64)
                values = array.values.to_numpy(zero_copy_only=False).astype(np.int64)
                columns[name] = Ragged(values=values, offsets=offsets)
            else:
                columns[name] = array.to_numpy(zero_copy_only=False).astype(np.int64)
        return cls(columns)

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> Table:
        columns: dict[str, Ragged | np.ndarray] = {}
        for name, first in rows[0].items():
            if name in STATS_COLUMNS:
                continue
            if not isinstance(first, str | bytes) and isinstance(first, Sequence | np.ndarray):
                columns[name] = Ragged.from_rows([row[name] for row in rows])
            elif isinstance(first, int | np.integer):
                columns[name] = np.asarray([row[name] for row in rows], dtype=np.int64)
        return cls(columns)


class Collator:
    """Pads a batch to its longest row: `input_ids`, masks, `word_ids`, `labels: {task: ...}`."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate feature rows (e.g. from a `datasets.Dataset`); the DataLoader entry point."""
        corpus = rows[0].get("corpus") if rows else None
        return self.collate(Table.from_rows(rows), np.arange(len(rows)), corpus)

    def collate(self, table: Table, index: np.ndarray, corpus: str | None = None) -> dict[str, Any]:
        """Gather rows `index` of `table` into a padded batch (vectorised, no per-token Python)."""
        index = np.asarray(index, dtype=np.int64)
        batch: dict[str, Any] = {"labels": {}, "corpus": corpus}
        for name, column in table.columns.items():
            if isinstance(column, Ragged):
                pad = IGNORE_INDEX if name.startswith(LABEL_PREFIX) else PAD_VALUES.get(
                    name, self.pad_token_id)
                tensor = torch.from_numpy(column.pad(index, pad))
            else:
                tensor = torch.from_numpy(column[index])
            if name.startswith(LABEL_PREFIX):
                batch["labels"][name[len(LABEL_PREFIX):]] = tensor
            else:
                batch[name] = tensor
        return batch


def make_collator(tokenizer: Any) -> Collator:
    """A collator that pads with the tokenizer's pad token id."""
    pad = tokenizer.pad_token_id
    return Collator(pad if pad is not None else 0)
