"""Built-in offline intent + slot corpus, sampled from the home-assistant-intents templates.

Each sentence comes from one template of one intent (the Task A label). Every slot-list
reference in the template (``{area}``, ``{brightness}``, ``{timer_name:name}``, ...) becomes an
IOB2 span typed by its slot name (Task B). Templates are walked at random with hassil's parsed
expressions instead of being enumerated, so generation stays fast for any size.

A template is one sentence template string of an intent's data block, as the intents package
writes it, with its rule references unexpanded (e.g. "<turn> on [<the>] {area} <light>"): the
alternatives, optional words and expansion rules inside it are ways of saying that one
template; two strings that differ in one word are two templates. The same string in two data
blocks of an intent (for two entity domains) is one template.

The splits (`split_by`, `holdout_values`; mtexp.data.builtin_split has the rules):

- `split_by: template` (default): every template's sentences go to exactly one of train, dev and
  test, stratified by intent and seeded. An intent with fewer than three templates stays whole
  in train: it is trained on and never evaluated (`train_only_intents` in the statistics).
  Test and dev then measure how the model handles a way of saying an intent it has not seen.
- `split_by: sentence`: sentences are drawn from every template and split at random within
  each intent; templates recur across splits, so test measures recall of seen templates.
- `holdout_values: true` (default): names, areas, floors, wildcard values and numbers of
  dev and test come from held-out parts of their lists, so entity recognition is judged on
  values never seen in training; the lists are extended for this (mtexp.data.builtin_vocab).

`split_by: sentence` with `holdout_values: false` is the corpus as it was before these options:
the same sentences in the same splits for the same config and seed.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mtexp.data.builtin_split import (
    TemplatePlan,
    ValueHoldout,
    every_template_everywhere,
    share,
    split_templates,
)
from mtexp.data.builtin_templates import BuiltinSentence, Span, Template, Walker, load_templates
from mtexp.data.builtin_vocab import vocabulary
from mtexp.data.source import ReadContext, SourceConfig
from mtexp.data.types import SPLITS, Corpus, DataError, Example

__all__ = ["BuiltinDataset", "BuiltinSentence", "BuiltinSource", "Span", "generate_builtin",
           "load_builtin", "read_builtin"]

_LOG = logging.getLogger(__name__)
# Consecutive duplicate draws after which an intent counts as exhausted.
_PATIENCE = 200
SPLIT_BY = ("template", "sentence")
# Statistics that stay out of the corpus statistics in metrics.json (timing, long detail).
_LOG_ONLY = ("seconds", "skipped")
BUILTIN_TASKS = ("intent", "slots")


@dataclass
class BuiltinSource(SourceConfig):
    """`source: builtin`: sentences sampled offline; the corpus is always named "builtin"."""

    language: str = "en"  # any language the package has; only "en" has device/area vocabulary
    size: int = 6000  # total sentences before the split (fewer if intents run out of variety)
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    min_examples_per_intent: int = 10  # intents with fewer unique sentences are dropped
    max_templates_per_intent: int | None = None
    number_words_prob: float = 0.3  # share of range values spelled out ("twenty-one")
    split_by: str = "template"  # template: no template in two splits | sentence: at random
    holdout_values: bool = True  # dev/test draw names, areas, numbers, ... train never saw

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size < 1:
            raise DataError(f"size: expected a positive integer, got {self.size!r}")
        if not 0 <= self.dev_fraction + self.test_fraction < 1:
            raise DataError("dev_fraction: dev_fraction + test_fraction must lie in [0, 1), "
                            f"got {self.dev_fraction} + {self.test_fraction}")
        if self.split_by not in SPLIT_BY:
            raise DataError(f"split_by: expected one of {SPLIT_BY}, got {self.split_by!r}")
        if not isinstance(self.holdout_values, bool):
            raise DataError(f"holdout_values: expected bool, got {self.holdout_values!r}")

    def task_names(self) -> tuple[str, ...]:
        return BUILTIN_TASKS

    @property
    def legacy_split(self) -> bool:
        """The split as it was before templates and values were held out."""
        return self.split_by == "sentence" and not self.holdout_values


@dataclass
class BuiltinDataset:
    splits: dict[str, list[BuiltinSentence]]
    stats: dict[str, Any] = field(default_factory=dict)


def read_builtin(src: BuiltinSource, ctx: ReadContext) -> Corpus:
    """The registry's reader: `load_builtin`, its tags checked by the run's BIO policy."""
    corpus = load_builtin(src, ctx.seed)
    for split, examples in corpus.splits.items():
        for j, example in enumerate(examples):
            where = f"{ctx.key} {split}[{j}]"
            example.labels["slots"] = ctx.policy.normalise(example.labels["slots"], where, split)
    return corpus


def load_builtin(cfg: BuiltinSource, seed: int) -> Corpus:
    """The built-in corpus: tasks ("intent", "slots"), splits train/dev/test; its statistics
    (all but timing and skip reasons) go to the corpus statistics of metrics.json."""
    data = generate_builtin(cfg, seed)
    _LOG.info("builtin data: %s", {k: v for k, v in data.stats.items() if k != "skipped"})
    splits = {
        name: [Example(list(s.words), {"intent": s.intent, "slots": list(s.tags)}) for s in rows]
        for name, rows in data.splits.items()
    }
    stats = {k: v for k, v in data.stats.items() if k not in _LOG_ONLY}
    return Corpus(name="builtin", tasks=BUILTIN_TASKS, splits=splits, stats=stats)


def generate_builtin(conf: BuiltinSource, seed: int) -> BuiltinDataset:
    """Sample, de-duplicate and split the built-in sentences; same config and seed -> same data."""
    start = time.perf_counter()
    skipped: Counter[str] = Counter()
    vocab = vocabulary(conf.language, extended=conf.holdout_values)
    templates = load_templates(conf.language, vocab, skipped)
    rng = random.Random(f"{seed}/templates")
    if conf.max_templates_per_intent:
        templates = {
            intent: _subset(rows, conf.max_templates_per_intent, rng)
            for intent, rows in templates.items()
        }
    if conf.legacy_split:
        splits, info = _sentence_split(templates, conf, seed)
    else:
        holdout = ValueHoldout.build(vocab, templates, seed) if conf.holdout_values else None
        splits, info = _planned_split(templates, holdout, conf, seed)
    stats = {
        "language": conf.language,
        "split_by": conf.split_by,
        "holdout_values": conf.holdout_values,
        "intents": len({s.intent for rows in splits.values() for s in rows}),
        "slot_types": len({sp.slot for rows in splits.values() for s in rows for sp in s.spans}),
        "sizes": {name: len(rows) for name, rows in splits.items()},
        "templates_used": sum(len(rows) for rows in templates.values()),
        "templates_skipped": sum(skipped.values()),
        "skipped": dict(sorted(skipped.items())),
        **info,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return BuiltinDataset(splits, stats)


def _subset(rows: list[Template], k: int, rng: random.Random) -> list[Template]:
    if len(rows) <= k:
        return rows
    keep = sorted(rng.sample(range(len(rows)), k))
    return [rows[i] for i in keep]


def _sentence_split(
    templates: dict[str, list[Template]], conf: BuiltinSource, seed: int
) -> tuple[dict[str, list[BuiltinSentence]], dict[str, Any]]:
    """Sample every intent's quota, then cut each intent's sentences into test/dev/train."""
    by_intent, collisions = _fill(_pools(templates, conf, seed, ""), conf.size, {})
    dropped = _drop_small(by_intent, conf.min_examples_per_intent)
    splits = _split(by_intent, conf, random.Random(f"{seed}/split"))
    return splits, {"dropped_intents": dropped, "cross_intent_duplicate_draws": collisions}


def _planned_split(
    templates: dict[str, list[Template]], holdout: ValueHoldout | None, conf: BuiltinSource, seed: int
) -> tuple[dict[str, list[BuiltinSentence]], dict[str, Any]]:
    """Sample each split from its own templates and values: test, then dev, then train."""
    if conf.split_by == "template":
        plan = split_templates(templates, conf.dev_fraction, conf.test_fraction,
                               random.Random(f"{seed}/template-split"))
    else:
        plan = every_template_everywhere(templates)
    budgets = _budgets(conf)
    owner: dict[str, str] = {}
    cells: dict[str, dict[str, list[BuiltinSentence]]] = {}
    collisions = 0
    for split in ("test", "dev", "train"):
        chosen = plan.templates[split]
        if holdout is not None:
            chosen = {i: [holdout.restrict(t, split) for t in rows] for i, rows in chosen.items()}
        cells[split], found = _fill(_pools(chosen, conf, seed, f"/{split}"), budgets[split], owner)
        collisions += found
    dropped = _drop_small_across(cells, conf.min_examples_per_intent)
    unseen = _drop_unseen_labels(cells)
    shuffle = random.Random(f"{seed}/split")
    splits = {}
    for split in SPLITS:
        splits[split] = [s for intent in sorted(cells[split]) for s in cells[split][intent]]
        shuffle.shuffle(splits[split])
    info = _plan_stats(plan if conf.split_by == "template" else None, holdout, splits, dropped)
    info.update(dropped_intents=dropped, dropped_unseen_label_sentences=unseen,
                cross_intent_duplicate_draws=collisions)
    return splits, info


def _budgets(conf: BuiltinSource) -> dict[str, int]:
    """Sentences per split: the dev and test fractions of `size`, the rest for train."""
    test, dev = round(conf.size * conf.test_fraction), round(conf.size * conf.dev_fraction)
    return {"test": test, "dev": dev, "train": conf.size - test - dev}


def _plan_stats(
    plan: TemplatePlan | None,
    holdout: ValueHoldout | None,
    splits: dict[str, list[BuiltinSentence]],
    dropped: list[str],
) -> dict[str, Any]:
    """How the templates (`plan`, for the template split) and values were shared out."""
    info: dict[str, Any] = {
        "intents_per_split": {name: len({s.intent for s in rows}) for name, rows in splits.items()},
    }
    if plan is not None:
        train_only = [intent for intent in plan.train_only if intent not in dropped]
        info.update(templates_per_split=plan.counts(), train_only_intents=train_only,
                    train_only_intent_count=len(train_only),
                    templates_moved_to_train=plan.moved_to_train)
    if holdout is not None:
        info["held_out_values"] = holdout.sizes()
    return info


def _pools(
    templates: dict[str, list[Template]], conf: BuiltinSource, seed: int, salt: str
) -> dict[str, Iterator[BuiltinSentence | None]]:
    """An endless stream of draws per intent, seeded by intent (and split, in `salt`)."""
    return {
        intent: _draws(intent, rows, random.Random(f"{seed}/{conf.language}/{intent}{salt}"), conf)
        for intent, rows in templates.items()
    }


def _draws(
    intent: str, rows: list[Template], rng: random.Random, conf: BuiltinSource
) -> Iterator[BuiltinSentence | None]:
    walker = Walker(rng, conf.language, conf.number_words_prob)
    while True:
        yield walker.sample(intent, rng.choice(rows))


def _fill(
    pools: dict[str, Iterator[BuiltinSentence | None]], size: int, owner: dict[str, str]
) -> tuple[dict[str, list[BuiltinSentence]], int]:
    """Fill equal per-intent quotas of `size` with unique sentences (`owner`: sentence -> intent,
    shared by the splits); exhausted intents pass their share on. Returns the rows and how many
    draws repeated a sentence of another intent."""
    collisions = 0
    rows: dict[str, list[BuiltinSentence]] = {intent: [] for intent in pools}
    open_intents = sorted(pools)
    while open_intents:
        budget = size - sum(len(r) for i, r in rows.items() if i not in open_intents)
        base, extra = divmod(max(budget, 0), len(open_intents))
        exhausted = []
        for rank, intent in enumerate(open_intents):
            quota, misses = base + (rank < extra), 0
            while len(rows[intent]) < quota and misses < _PATIENCE:
                sent = next(pools[intent])
                if sent is None or sent.key in owner:
                    collisions += sent is not None and owner[sent.key] != intent
                    misses += 1
                    continue
                owner[sent.key] = intent
                rows[intent].append(sent)
                misses = 0
            if len(rows[intent]) < quota:
                exhausted.append(intent)
        if not exhausted:
            break
        open_intents = [i for i in open_intents if i not in exhausted]
    return rows, collisions


def _drop_small(by_intent: dict[str, list[BuiltinSentence]], minimum: int) -> list[str]:
    """Remove the intents with fewer than `minimum` sentences; their names, sorted."""
    dropped = sorted(i for i, rows in by_intent.items() if len(rows) < minimum)
    for intent in dropped:
        del by_intent[intent]
    return dropped


def _drop_small_across(cells: dict[str, dict[str, list[BuiltinSentence]]], minimum: int) -> list[str]:
    """`_drop_small` on each intent's sentences over all splits together."""
    totals: Counter[str] = Counter()
    for by_intent in cells.values():
        totals.update({intent: len(rows) for intent, rows in by_intent.items()})
    dropped = sorted(i for i, n in totals.items() if n < minimum)
    for by_intent in cells.values():
        for intent in dropped:
            by_intent.pop(intent, None)
    return dropped


def _drop_unseen_labels(cells: dict[str, dict[str, list[BuiltinSentence]]]) -> int:
    """Drop dev/test sentences whose intent or a slot type has no train sentence; how many."""
    train = cells["train"]
    slots = {span.slot for rows in train.values() for s in rows for span in s.spans}
    dropped = 0
    for split in ("dev", "test"):
        for intent in list(cells[split]):
            rows = cells[split][intent]
            keep = [s for s in rows if train.get(intent) and {sp.slot for sp in s.spans} <= slots]
            dropped += len(rows) - len(keep)
            cells[split][intent] = keep
    return dropped


def _split(
    by_intent: dict[str, list[BuiltinSentence]], conf: BuiltinSource, rng: random.Random
) -> dict[str, list[BuiltinSentence]]:
    """Stratified by intent: each intent's sentences are shuffled and cut into test/dev/train."""
    splits: dict[str, list[BuiltinSentence]] = {"train": [], "dev": [], "test": []}
    for intent in sorted(by_intent):
        rows = list(by_intent[intent])
        rng.shuffle(rows)
        n_test = share(len(rows), conf.test_fraction)
        n_dev = share(len(rows), conf.dev_fraction)
        splits["test"] += rows[:n_test]
        splits["dev"] += rows[n_test : n_test + n_dev]
        splits["train"] += rows[n_test + n_dev :]
    for rows in splits.values():
        rng.shuffle(rows)
    return splits
