"""Tokenised features: word labels aligned to sub-tokens, built once and cached on disk."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from mtexp.data.align import continuation_ids, label_rows, tokenize_batch
from mtexp.data.cache import cache_key
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
    """Tokenise every (corpus, split) once; reuse `cache_dir/<key>` when it exists.

    The key hashes the tokenizer (its full serialisation), `max_length`, `label_all_tokens`
    and the data content. A cache is written to a temporary folder and renamed into place, so
    a failed build leaves nothing behind.
    """
    key, meta = cache_key(data, tokenizer, max_length, label_all_tokens)
    common = {"collator": make_collator(tokenizer), "max_length": max_length,
              "label_all_tokens": label_all_tokens}
    if cache_dir is None:
        built = _tokenize_all(data, tokenizer, max_length, label_all_tokens)
        return _with_stats(Features(data, built, **common), "disabled")
    root = resolve_path(cache_dir, "cache_dir", must_exist=False)
    final = root / key
    if not (final / "meta.json").is_file():
        built = _tokenize_all(data, tokenizer, max_length, label_all_tokens)
        _write_cache(root, final, built, meta)
        status = "miss"
    else:
        status = "hit"
    features = Features(data, _read_cache(final), cache_path=final, **common)
    return _with_stats(features, status)


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


def _write_cache(root: Path, final: Path, built: dict, meta: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex}"
    try:
        parts = {}
        for n, ((corpus, split), ds) in enumerate(sorted(built.items())):
            parts[f"part{n}"] = [corpus, split]
            ds.save_to_disk(str(tmp / f"part{n}"))
        (tmp / "meta.json").write_text(json.dumps({**meta, "parts": parts}, indent=1))
        os.rename(tmp, final)
        log.info("feature cache written: %s", final)
    except OSError:
        if (final / "meta.json").is_file():  # another run finished the same cache first
            return
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(final: Path) -> dict[tuple[str, str], datasets.Dataset]:
    meta = json.loads((final / "meta.json").read_text())
    return {
        (corpus, split): datasets.load_from_disk(str(final / part))
        for part, (corpus, split) in meta["parts"].items()
    }


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
