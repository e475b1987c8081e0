"""Built-in offline intent + slot corpus, sampled from the home-assistant-intents templates.

Each sentence comes from one template of one intent (the Task A label). Every slot-list
reference in the template (``{area}``, ``{brightness}``, ``{timer_name:name}``, ...) becomes an
IOB2 span typed by its slot name (Task B). Templates are walked at random with hassil's parsed
expressions instead of being enumerated, so generation stays fast for any size.

Words are lowercased whitespace tokens. A slot value always forms whole words: literal text
glued to it is split off ("50%" -> "50", "%") and a joining hyphen is dropped
("5-minute" -> "5", "minute"), so tags stay aligned with words.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hassil import Intents
from hassil.expression import (
    Alternative,
    Expression,
    Group,
    ListReference,
    Permutation,
    RuleReference,
    Sentence,
    TextChunk,
)
from hassil.intents import IntentData, RangeFractionType, RangeSlotList, SlotList, TextSlotList
from hassil.numbers import get_rbnf_engine

from mtexp.data.builtin_vocab import VOCABULARIES, Vocabulary, text_list
from mtexp.data.source import ReadContext, SourceConfig
from mtexp.data.types import Corpus, DataError, Example

_LOG = logging.getLogger(__name__)
_PUNCT = "?!.,;:¿¡"
# Consecutive duplicate draws after which an intent counts as exhausted.
_PATIENCE = 200


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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size < 1:
            raise DataError(f"size: expected a positive integer, got {self.size!r}")
        if not 0 <= self.dev_fraction + self.test_fraction < 1:
            raise DataError("dev_fraction: dev_fraction + test_fraction must lie in [0, 1), "
                            f"got {self.dev_fraction} + {self.test_fraction}")


@dataclass(frozen=True)
class Span:
    """A tagged slot: words[start:end] joined by spaces equals `text`, a value of `list_name`."""

    slot: str
    list_name: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class BuiltinSentence:
    intent: str
    words: tuple[str, ...]
    tags: tuple[str, ...]
    spans: tuple[Span, ...]

    @property
    def key(self) -> str:
        """Normalised text used for de-duplication."""
        return " ".join(self.words)


@dataclass
class BuiltinDataset:
    splits: dict[str, list[BuiltinSentence]]
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Template:
    sentence: Sentence
    rules: dict[str, Sentence]
    lists: dict[str, SlotList]


class _Unfillable(Exception):
    """A template refers to a list or rule with no usable values."""


def read_builtin(src: BuiltinSource, ctx: ReadContext) -> Corpus:
    """The registry's reader: `load_builtin`, its tags checked by the run's BIO policy."""
    corpus = load_builtin(src, ctx.seed)
    for split, examples in corpus.splits.items():
        for j, example in enumerate(examples):
            where = f"{ctx.key} {split}[{j}]"
            example.labels["slots"] = ctx.policy.normalise(example.labels["slots"], where, split)
    return corpus


def load_builtin(cfg: BuiltinSource, seed: int) -> Corpus:
    """The built-in corpus: tasks ("intent", "slots"), splits train/dev/test."""
    data = generate_builtin(cfg, seed)
    _LOG.info("builtin data: %s", {k: v for k, v in data.stats.items() if k != "skipped"})
    splits = {
        name: [Example(list(s.words), {"intent": s.intent, "slots": list(s.tags)}) for s in rows]
        for name, rows in data.splits.items()
    }
    return Corpus(name="builtin", tasks=("intent", "slots"), splits=splits)


def generate_builtin(conf: BuiltinSource, seed: int) -> BuiltinDataset:
    """Sample, de-duplicate and split the built-in sentences; same config and seed -> same data."""
    start = time.perf_counter()
    skipped: Counter[str] = Counter()
    templates = _load_templates(conf.language, skipped)
    rng = random.Random(f"{seed}/templates")
    if conf.max_templates_per_intent:
        templates = {
            intent: _subset(rows, conf.max_templates_per_intent, rng)
            for intent, rows in templates.items()
        }
    by_intent, collisions = _sample_all(templates, conf, seed)
    dropped = sorted(i for i, rows in by_intent.items() if len(rows) < conf.min_examples_per_intent)
    for intent in dropped:
        del by_intent[intent]
    splits = _split(by_intent, conf, random.Random(f"{seed}/split"))
    stats = {
        "language": conf.language,
        "intents": len(by_intent),
        "slot_types": len({sp.slot for rows in by_intent.values() for s in rows for sp in s.spans}),
        "sizes": {name: len(rows) for name, rows in splits.items()},
        "templates_used": sum(len(rows) for rows in templates.values()),
        "templates_skipped": sum(skipped.values()),
        "skipped": dict(sorted(skipped.items())),
        "dropped_intents": dropped,
        "cross_intent_duplicate_draws": collisions,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return BuiltinDataset(splits, stats)


def _subset(rows: list[_Template], k: int, rng: random.Random) -> list[_Template]:
    if len(rows) <= k:
        return rows
    keep = sorted(rng.sample(range(len(rows)), k))
    return [rows[i] for i in keep]


def _load_templates(language: str, skipped: Counter[str]) -> dict[str, list[_Template]]:
    """Usable templates per intent; skipped ones are counted by reason in `skipped`."""
    from home_assistant_intents import get_intents

    raw = get_intents(language)
    if raw is None:
        raise DataError(f"home-assistant-intents has no sentences for language {language!r}")
    intents = Intents.from_dict(raw)
    vocab = VOCABULARIES.get(language, Vocabulary({}, (), (), {}))
    base_lists = {**intents.slot_lists, **vocab.slot_lists()}
    out: dict[str, list[_Template]] = {}
    for name in sorted(intents.intents):
        rows: list[_Template] = []
        for data in intents.intents[name].data:
            rules = {**intents.expansion_rules, **data.expansion_rules}
            names = text_list(vocab.names(_domains(data)), "name")
            lists = {**base_lists, **data.slot_lists, "name": names}
            for sentence in data.sentences:
                try:
                    _check(sentence.expression, rules, lists, ())
                except _Unfillable as err:
                    skipped[str(err)] += 1
                    continue
                rows.append(_Template(sentence, rules, lists))
        if rows:
            out[name] = rows
        else:
            skipped[f"intent {name} has no usable template"] += 1
    return out


def _domains(data: IntentData) -> set[str] | None:
    """Entity domains a block's {name} must come from (None: any)."""
    for source in (data.requires_context, data.slots):
        value = source.get("domain")
        if isinstance(value, str):
            return {value}
        if isinstance(value, (list, tuple, set)):
            return set(value)
    return None


def _check(
    expr: Expression, rules: dict[str, Sentence], lists: dict[str, SlotList], path: tuple
) -> None:
    """Raise _Unfillable when some list or rule the expression can reach has no values."""
    if isinstance(expr, Group):
        for item in expr.items:
            _check(item, rules, lists, path)
    elif isinstance(expr, RuleReference):
        if expr.rule_name not in rules:
            raise _Unfillable(f"missing rule <{expr.rule_name}>")
        if expr.rule_name in path:
            raise _Unfillable(f"recursive rule <{expr.rule_name}>")
        _check(rules[expr.rule_name].expression, rules, lists, (*path, expr.rule_name))
    elif isinstance(expr, ListReference) and not expr.is_inline_range:
        slot_list = lists.get(expr.list_name)
        if isinstance(slot_list, TextSlotList) and slot_list.values:
            for value in slot_list.values:
                _check(value.text_in, rules, lists, path)
        elif not isinstance(slot_list, RangeSlotList):
            raise _Unfillable(f"no values for list {{{expr.list_name}}}")


class _Walker:
    """Draws one random expansion of a template as (text, slot, list name) pieces."""

    def __init__(self, rng: random.Random, language: str, number_words_prob: float) -> None:
        self.rng = rng
        self.language = language
        self.number_words_prob = number_words_prob

    def sample(self, intent: str, template: _Template) -> BuiltinSentence | None:
        pieces: list[tuple[str, str | None, str | None]] = []
        self._walk(template.sentence.expression, template, pieces, inside_slot=False)
        return _assemble(intent, pieces)

    def _walk(self, expr: Expression, tpl: _Template, out: list, inside_slot: bool) -> None:
        if isinstance(expr, TextChunk):
            out.append((expr.text, None, None))
        elif isinstance(expr, Alternative):
            if expr.items:
                self._walk(self.rng.choice(expr.items), tpl, out, inside_slot)
        elif isinstance(expr, Permutation):
            items = list(expr.items)
            self.rng.shuffle(items)
            for item in items:
                self._walk(item, tpl, out, inside_slot)
        elif isinstance(expr, Group):
            for item in expr.items:
                self._walk(item, tpl, out, inside_slot)
        elif isinstance(expr, RuleReference):
            self._walk(tpl.rules[expr.rule_name].expression, tpl, out, inside_slot)
        elif isinstance(expr, ListReference):
            text = self._list_value(expr, tpl)
            out.append((text, None, None) if inside_slot else (text, expr.slot_name, expr.list_name))
        else:
            raise TypeError(f"unexpected template expression {expr!r}")

    def _list_value(self, ref: ListReference, tpl: _Template) -> str:
        inline = ref.get_inline_range()
        slot_list = RangeSlotList(None, *inline) if inline else tpl.lists[ref.list_name]
        if isinstance(slot_list, RangeSlotList):
            return self._number(slot_list)
        assert isinstance(slot_list, TextSlotList)
        inner: list[tuple[str, str | None, str | None]] = []
        self._walk(self.rng.choice(slot_list.values).text_in, tpl, inner, inside_slot=True)
        return "".join(text for text, _, _ in inner)

    def _number(self, rl: RangeSlotList) -> str:
        value: float = self.rng.choice(range(rl.start, rl.stop + 1, rl.step))
        fractions = RangeFractionType.get_fractions(rl.fraction_type)
        if fractions:
            value += self.rng.choice([0.0, *fractions])
        if value == int(value):
            value = int(value)
        use_words = rl.words and (not rl.digits or self.rng.random() < self.number_words_prob)
        if not use_words:
            return str(value)
        try:
            engine = get_rbnf_engine(rl.words_language or self.language)
        except ValueError:  # no number spelling rules for this language
            return str(value)
        spellings = sorted(set(engine.format_number(value).text_by_ruleset.values()))
        return self.rng.choice(spellings) if spellings else str(value)


def _assemble(
    intent: str, pieces: list[tuple[str, str | None, str | None]]
) -> BuiltinSentence | None:
    """Pieces -> words, IOB2 tags and spans; None when a slot value came out empty."""
    words: list[str] = []
    tags: list[str] = []
    spans: list[Span] = []
    buffer, after_slot = "", False
    for text, slot, list_name in pieces:
        if slot is None:
            buffer += text
            continue
        _add_literal(buffer.rstrip("-"), after_slot, words, tags)
        buffer, after_slot = "", True
        value = text.lower().split()
        if not value:
            return None
        spans.append(Span(slot, str(list_name), len(words), len(words) + len(value), " ".join(value)))
        words.extend(value)
        tags.extend([f"B-{slot}"] + [f"I-{slot}"] * (len(value) - 1))
    _add_literal(buffer, after_slot, words, tags)
    if not words:
        return None
    return BuiltinSentence(intent, tuple(words), tuple(tags), tuple(spans))


def _add_literal(text: str, after_slot: bool, words: list[str], tags: list[str]) -> None:
    if after_slot:
        text = text.lstrip("-")
    for raw in text.lower().split():
        word = raw.strip(_PUNCT)
        if word:
            words.append(word)
            tags.append("O")


def _sample_all(
    templates: dict[str, list[_Template]], conf: BuiltinSource, seed: int
) -> tuple[dict[str, list[BuiltinSentence]], int]:
    """Fill per-intent quotas with unique sentences; exhausted intents pass their share on."""
    owner: dict[str, str] = {}
    collisions = 0
    pools = {
        intent: _draws(intent, rows, random.Random(f"{seed}/{conf.language}/{intent}"), conf)
        for intent, rows in templates.items()
    }
    rows: dict[str, list[BuiltinSentence]] = {intent: [] for intent in templates}
    open_intents = sorted(templates)
    while open_intents:
        budget = conf.size - sum(len(r) for i, r in rows.items() if i not in open_intents)
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


def _draws(
    intent: str, rows: list[_Template], rng: random.Random, conf: BuiltinSource
) -> Iterator[BuiltinSentence | None]:
    walker = _Walker(rng, conf.language, conf.number_words_prob)
    while True:
        yield walker.sample(intent, rng.choice(rows))


def _split(
    by_intent: dict[str, list[BuiltinSentence]], conf: BuiltinSource, rng: random.Random
) -> dict[str, list[BuiltinSentence]]:
    """Stratified by intent: each intent's sentences are shuffled and cut into test/dev/train."""
    splits: dict[str, list[BuiltinSentence]] = {"train": [], "dev": [], "test": []}
    for intent in sorted(by_intent):
        rows = list(by_intent[intent])
        rng.shuffle(rows)
        n_test = _share(len(rows), conf.test_fraction)
        n_dev = _share(len(rows), conf.dev_fraction)
        splits["test"] += rows[:n_test]
        splits["dev"] += rows[n_test : n_test + n_dev]
        splits["train"] += rows[n_test + n_dev :]
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def _share(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    return max(1, round(n * fraction)) if n >= 3 else 0
