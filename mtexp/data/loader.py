"""`load_data`: read every source of a data config and build the multi-task dataset."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from mtexp.data.bio import BioPolicy
from mtexp.data.config import DataConfig, data_config
from mtexp.data.registry import source_of
from mtexp.data.source import ReadContext, SourceConfig
from mtexp.data.splits import carve, subsample
from mtexp.data.types import SPLITS, Corpus, DataError, MultiTaskData, TaskSpec
from mtexp.data.vocab import apply_unseen, build_spec, task_kinds

# Salts keep the seeded streams of different steps independent of each other.
SALT = {"dev": 1, "test": 2, "subsample": 3}

log = logging.getLogger(__name__)


def load_data(cfg: DataConfig | Mapping[str, Any], seed: int) -> MultiTaskData:
    """Build a `MultiTaskData` from a `DataConfig`; a mapping (the `data` node, or a root config
    with one; see conf/data/) is converted by `data_config` first."""
    conf = data_config(cfg)
    stats: dict[str, Any] = {"seed": seed, "corpora": {}, "unseen_labels": {}}
    corpora = []
    for i, src in enumerate(conf.sources):
        corpus, policy = _read_source(src, f"data.sources[{i}]", conf.strict_bio, seed)
        carved = _carve_missing(corpus, conf, seed, i)
        stats["corpora"][corpus.name] = {"carved": carved, **policy.stats()}
        if corpus.stats:
            stats["corpora"][corpus.name]["source"] = corpus.stats
        corpora.append(corpus)
    _check_unique(corpora)
    tasks = _build_tasks(corpora, conf.unseen_label, stats)
    for i, corpus in enumerate(corpora):
        cstats = stats["corpora"][corpus.name]
        cstats["train_before_subsample"] = len(corpus.splits["train"])
        _subsample(corpus, tasks, conf, np.random.default_rng([seed, SALT["subsample"], i]))
        cstats.update(tasks=list(corpus.tasks), sizes=corpus.sizes())
    name = conf.name or "+".join(c.name for c in corpora)
    joint = len(corpora) == 1
    stats.update(name=name, joint=joint, train_fraction=conf.train_fraction,
                 max_train_examples=conf.max_train_examples)
    return MultiTaskData(name=name, tasks=tasks, corpora=corpora, joint=joint, stats=stats)


def _read_source(src: SourceConfig, key: str, strict_bio: bool, seed: int) -> tuple[Corpus, BioPolicy]:
    policy = BioPolicy(scheme=src.tag_scheme(), strict=strict_bio)
    corpus = source_of(src).read(src, ReadContext(key, policy, seed))
    _check_not_empty(corpus, key)
    _log_tag_changes(policy, key, corpus.name)
    return corpus, policy


def _log_tag_changes(policy: BioPolicy, key: str, corpus: str) -> None:
    """One line per kind of change the BIO policy made to a source's tags, counted per split."""
    if policy.repaired:
        log.warning(
            "%s (corpus %r): %d malformed BIO tag(s) repaired to IOB2 (an I- tag that starts a "
            "span made B-): %s; set data.strict_bio=true to reject such files instead",
            key, corpus, sum(policy.repaired.values()), _per_split(policy.repaired),
        )
    if policy.converted:
        log.info("%s (corpus %r): %d IOB1 tag(s) converted to IOB2: %s",
                 key, corpus, sum(policy.converted.values()), _per_split(policy.converted))


def _per_split(counts: Mapping[str, int]) -> str:
    order = [*(split for split in SPLITS if split in counts), *(s for s in counts if s not in SPLITS)]
    return ", ".join(f"{split} {counts[split]}" for split in order if counts[split])


def _carve_missing(corpus: Corpus, conf: DataConfig, seed: int, index: int) -> list[str]:
    """Carve dev (and test, when absent) from train, stratified by the sequence task's label."""
    seq_task = _sequence_task(corpus)
    carved = []
    for split in ("test", "dev"):
        if split not in corpus.splits:
            rng = np.random.default_rng([seed, SALT[split], index])
            train, held = carve(corpus.splits["train"], getattr(conf, f"{split}_fraction"), seq_task, rng)
            corpus.splits["train"], corpus.splits[split] = train, held
            carved.append(split)
    corpus.splits = {split: corpus.splits[split] for split in SPLITS}
    return sorted(carved)


def _check_not_empty(corpus: Corpus, key: str) -> None:
    if "train" not in corpus.splits:
        raise DataError(f"{key}: corpus {corpus.name!r} has no train split")
    for split, examples in corpus.splits.items():
        if not examples:
            raise DataError(f"{key}: corpus {corpus.name!r}: split {split!r} is empty")


def _sequence_task(corpus: Corpus) -> str | None:
    kinds = task_kinds(corpus, f"corpus {corpus.name!r}")
    return next((t for t in corpus.tasks if kinds[t] == "sequence"), None)


def _check_unique(corpora: list[Corpus]) -> None:
    names = [c.name for c in corpora]
    if len(set(names)) != len(names):
        raise DataError(f"data.sources: corpus names must differ, got {names}; set `name` per source")
    tasks = [t for c in corpora for t in c.tasks]
    if len(set(tasks)) != len(tasks):
        raise DataError(f"data.sources: each task must come from one source, got {tasks}")


def _build_tasks(corpora: list[Corpus], unseen_label: str, stats: dict) -> list[TaskSpec]:
    tasks = []
    for corpus in corpora:
        for name, kind in task_kinds(corpus, f"corpus {corpus.name!r}").items():
            spec = build_spec(name, kind, corpus, unseen_label)
            unseen = apply_unseen(corpus, spec, unseen_label)
            if unseen:
                stats["unseen_labels"][name] = unseen
            tasks.append(spec)
    return tasks


def _subsample(corpus: Corpus, tasks: list[TaskSpec], conf: DataConfig, rng: np.random.Generator) -> None:
    if conf.train_fraction >= 1 and conf.max_train_examples is None:
        return
    kinds = {t.name: t.kind for t in tasks}
    seq_task = next((t for t in corpus.tasks if kinds[t] == "sequence"), None)
    corpus.splits["train"] = subsample(
        corpus.splits["train"], conf.train_fraction, conf.max_train_examples, seq_task, rng
    )
