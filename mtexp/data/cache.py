"""Cache keys for tokenised features: tokenizer, max_length, alignment option and data content."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from mtexp.data.types import MultiTaskData

FORMAT_VERSION = 2


def tokenizer_hash(tokenizer: Any) -> str:
    """Hash of the fast tokenizer's serialisation (vocab, normaliser, pre-tokeniser), without
    the truncation/padding state that calling the tokenizer changes."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
    else:
        state = tokenizer.get_vocab()
    text = json.dumps(state, sort_keys=True, ensure_ascii=False)
    extra = json.dumps([type(tokenizer).__name__, tokenizer.all_special_tokens])
    return hashlib.sha256((text + extra).encode("utf-8")).hexdigest()


def data_hash(data: MultiTaskData) -> str:
    """Hash of every task's labels and every example's words and labels, in order."""
    digest = hashlib.sha256()
    tasks = [[t.name, t.kind, list(t.labels)] for t in data.tasks]
    digest.update(json.dumps(tasks).encode("utf-8"))
    for corpus in data.corpora:
        digest.update(json.dumps([corpus.name, list(corpus.tasks)]).encode("utf-8"))
        for split, examples in corpus.splits.items():
            digest.update(f"\n{split}:{len(examples)}\n".encode())
            for ex in examples:
                row = [ex.words, [ex.labels[t] for t in corpus.tasks]]
                digest.update(json.dumps(row, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def cache_key(
    data: MultiTaskData, tokenizer: Any, max_length: int, label_all_tokens: bool
) -> tuple[str, dict[str, Any]]:
    """The folder name of a feature cache and the metadata stored beside it."""
    meta = {
        "version": FORMAT_VERSION,
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "max_length": int(max_length),
        "label_all_tokens": bool(label_all_tokens),
        "data": data.name,
        "data_hash": data_hash(data),
    }
    parts = {k: v for k, v in meta.items() if k not in ("tokenizer", "data")}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:24]
    return f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', data.name)}-{key}", meta
