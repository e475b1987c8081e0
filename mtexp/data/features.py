"""Tokenised features: word labels aligned to sub-tokens, built once and cached on disk."""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from mtexp.data.align import continuation_ids, label_rows, tokenize_batch
from mtexp.data.cache import DamagedEntry, cache_key, discard_entry, read_entry, write_entry
from mtexp.data.collate import UNK_COLUMN, Collator, Table, make_collator
from mtexp.data.textio import resolve_path
from mtexp.data.types import SPLITS, MultiTaskData, TaskSpec

log = logging.getLogger(__name__)


@dataclass
class Features:
    """A tokenised `datasets.Dataset` and its columnar `Table` per (corpus, split)."""

    data: MultiTaskData
    datasets: dict[tuple[str, str], datasets.Dataset]
    collator: Collator
    max_length: int
    label_all_tokens: bool
    stats: dict[str, Any] = field(default_factory=dict)
    cache_path: Path | None = None
    tables: dict[tuple[str, str], Table] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, ds in self.datasets.items():
            self.tables[key] = Table.from_arrow(ds.data.table)

    def table(self, corpus: str, split: str) -> Table:
        return self.tables[(corpus, split)]

    def tasks_of(self, corpus: str) -> list[TaskSpec]:
        names = self.data.corpus(corpus).tasks
        return [t for t in self.data.tasks if t.name in names]


def build_features(
    data: MultiTaskData,
    tokenizer: Any,
    max_length: int,
    label_all_tokens: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Features:
    """Tokenise every (corpus, split) once; reuse the entry `cache_dir/<key>` when it exists.

    The key hashes the tokenizer (its full serialisation), `max_length`, `label_all_tokens`
    and the data content. An entry is written to a temporary folder and renamed into place, so
    a failed or killed build leaves no entry behind; an entry that fails its manifest (sizes and
    checksums) is named in a warning and rebuilt. `stats["cache"]` says which happened: `hit`,
    `miss`, `rebuilt` or `disabled`.
    """
    key, meta = cache_key(data, tokenizer, max_length, label_all_tokens)
    common = {"collator": make_collator(tokenizer), "max_length": max_length,
              "label_all_tokens": label_all_tokens}
    if cache_dir is None:
        built = _tokenize_all(data, tokenizer, max_length, label_all_tokens)
        return _with_stats(Features(data, built, **common), "disabled")
    root = resolve_path(cache_dir, "cache_dir", must_exist=False)
    cached, status = _read_cached(root / key)
    if cached is None:
        built = _tokenize_all(data, tokenizer, max_length, label_all_tokens)
        entry = write_entry(root, key, built, meta)
        cached, _ = _read_cached(entry)
        cached = built if cached is None else cached  # the entry went again meanwhile
    features = Features(data, cached, cache_path=root / key, **common)
    return _with_stats(features, status)


def _read_cached(entry: Path) -> tuple[dict[tuple[str, str], datasets.Dataset] | None, str]:
    """(the entry's datasets, "hit"), or (None, "miss"); a damaged entry is reported and
    removed: (None, "rebuilt")."""
    try:
        cached = read_entry(entry)
    except DamagedEntry as damage:
        log.warning("feature cache entry %s is damaged: %s; rebuilding it", entry, damage)
        discard_entry(entry, damage.build_id)
        return None, "rebuilt"
    return cached, "miss" if cached is None else "hit"


def _tokenize_all(
    data: MultiTaskData, tokenizer: Any, max_length: int, label_all_tokens: bool
) -> dict[tuple[str, str], datasets.Dataset]:
    built = {}
    for corpus in data.corpora:
        specs = [t for t in data.tasks if t.name in corpus.tasks]
        token_tasks = {t.name: continuation_ids(t) for t in specs if t.kind == "token"}
        for split in SPLITS:
            rows = label_rows(corpus.splits[split], specs)
            fn = partial(tokenize_batch, tokenizer=tokenizer, max_length=max_length,
                         token_tasks=token_tasks, label_all_tokens=label_all_tokens)
            ds = datasets.Dataset.from_list(rows).map(
                fn, batched=True, remove_columns=["words"],
                new_fingerprint=f"{corpus.name}-{split}-{uuid.uuid4().hex}",
                desc=f"tokenise {corpus.name}/{split}",
            )
            built[(corpus.name, split)] = ds
    return built


def _with_stats(features: Features, cache: str) -> Features:
    """Record truncation per (corpus, split): examples that lost words, and the words lost."""
    truncation, unk_words = {}, {}
    for (corpus, split), table in features.tables.items():
        unk = features.datasets[(corpus, split)].data.table.column(UNK_COLUMN).to_numpy()
        unk_words[f"{corpus}/{split}"] = int(unk.sum())
        word_ids = table.columns["word_ids"]
        kept = np.maximum.reduceat(word_ids.values, word_ids.offsets[:-1]) + 1
        lost = np.maximum(table.columns["n_words"] - kept, 0)
        truncation[f"{corpus}/{split}"] = {
            "examples": int((lost > 0).sum()), "words_lost": int(lost.sum()),
            "max_tokens": int(table.lengths.max()),
        }
    truncated = sum(v["examples"] for v in truncation.values())
    if truncated:
        log.warning("truncation: %d example(s) lost words: %s", truncated, truncation)
    features.stats = {"cache": cache, "truncated_examples": truncated, "truncation": truncation,
                      "unk_words": unk_words}
    return features
