"""Tokenising words and aligning word labels to sub-tokens through `word_ids()`."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtexp.data.collate import IGNORE_INDEX, LABEL_PREFIX, UNK_COLUMN
from mtexp.data.types import Example, TaskSpec


def label_rows(examples: list[Example], specs: list[TaskSpec]) -> list[dict[str, Any]]:
    """Rows for `datasets.Dataset.from_list`: words, index, word count and label ids."""
    ids = {t.name: t.label_to_id() for t in specs}
    rows = []
    for i, ex in enumerate(examples):
        row: dict[str, Any] = {"words": ex.words, "example_index": i, "n_words": len(ex.words)}
        for t in specs:
            value, lookup = ex.labels[t.name], ids[t.name]
            row[LABEL_PREFIX + t.name] = (
                lookup[value] if t.kind == "sequence" else [lookup[v] for v in value]
            )
        rows.append(row)
    return rows


def continuation_ids(spec: TaskSpec) -> np.ndarray:
    """Label id for continuation sub-tokens under `label_all_tokens`: B-x -> I-x."""
    lookup = spec.label_to_id()
    return np.array(
        [lookup.get("I-" + label[2:], i) if label.startswith("B-") else i
         for i, label in enumerate(spec.labels)],
        dtype=np.int64,
    )


def encode_words(tokenizer: Any, words: list[list[str]], max_length: int) -> tuple[Any, list, list]:
    """Encode pre-split words; returns (encoding, word_ids arrays, unk count per example).

    A word the tokenizer turns into nothing (e.g. U+FFFD, dropped by BERT's normaliser) is
    replaced by the unknown token, so every word keeps a sub-token to carry its label.
    """
    enc = _encode(tokenizer, words, max_length)
    word_ids = _word_ids(enc, len(words))
    unk = tokenizer.unk_token
    empty = [_empty_words(w, len(ws), max_length) for w, ws in zip(word_ids, words, strict=True)]
    if unk is None or not any(len(e) for e in empty):
        return enc, word_ids, [0] * len(words)
    fixed = [[unk if j in set(e.tolist()) else word for j, word in enumerate(ws)] if len(e) else ws
             for ws, e in zip(words, empty, strict=True)]
    enc = _encode(tokenizer, fixed, max_length)
    return enc, _word_ids(enc, len(words)), [len(e) for e in empty]


def _encode(tokenizer: Any, words: list[list[str]], max_length: int) -> Any:
    return tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)


def _word_ids(enc: Any, n: int) -> list[np.ndarray]:
    return [np.array([-1 if w is None else w for w in enc.word_ids(i)], dtype=np.int64)
            for i in range(n)]


def _empty_words(word_ids: np.ndarray, n_words: int, max_length: int) -> np.ndarray:
    """Words with no sub-token; past the last kept word only when nothing was truncated."""
    kept = np.unique(word_ids[word_ids >= 0])
    end = n_words if len(word_ids) < max_length else (int(kept.max()) + 1 if len(kept) else 0)
    return np.setdiff1d(np.arange(end), kept)


def tokenize_batch(
    batch: dict[str, list],
    tokenizer: Any,
    max_length: int,
    token_tasks: dict[str, np.ndarray],
    label_all_tokens: bool,
) -> dict[str, list]:
    """`datasets.map(batched=True)` function: sub-token ids, word ids and aligned labels."""
    enc, word_ids, unk_counts = encode_words(tokenizer, batch["words"], max_length)
    out: dict[str, list] = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")
                            if k in enc}
    out["word_ids"] = word_ids
    out[UNK_COLUMN] = unk_counts
    for task, continuation in token_tasks.items():
        column = LABEL_PREFIX + task
        out[column] = [
            align_labels(w, np.asarray(labels, dtype=np.int64), continuation, label_all_tokens)
            for w, labels in zip(word_ids, batch[column], strict=True)
        ]
    return out


def align_labels(
    word_ids: np.ndarray, word_labels: np.ndarray, continuation: np.ndarray, label_all: bool
) -> np.ndarray:
    """Sub-token labels: the word's label on its first piece; -100 on specials (and on other
    pieces, unless `label_all`, where they get the continuation label)."""
    valid = word_ids >= 0
    first = valid & np.concatenate([[True], word_ids[1:] != word_ids[:-1]])
    labels = word_labels[np.where(valid, word_ids, 0)]
    if label_all:
        labels = np.where(first, labels, continuation[labels])
        return np.where(valid, labels, IGNORE_INDEX)
    return np.where(first, labels, IGNORE_INDEX)
