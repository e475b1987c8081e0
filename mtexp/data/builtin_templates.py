"""The home-assistant-intents templates of the built-in corpus and their random expansion.

A `Template` is one sentence template string of an intent's data block (e.g.
"<turn> on [<the>] {area} <light>"), parsed by hassil, with its rule references kept
unexpanded: the rules, alternatives and optional parts it holds are ways of saying that one
template. `Walker` draws one expansion of a template as words, IOB2 tags and spans: every
slot-list reference (``{area}``, ``{timer_name:name}``, ...) becomes a span typed by its slot
name.

Words are lowercased whitespace tokens. A slot value always forms whole words: literal text
glued to it is split off ("50%" -> "50", "%") and a joining hyphen is dropped
("5-minute" -> "5", "minute"), so tags stay aligned with words.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

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

from mtexp.data.builtin_vocab import Vocabulary, text_list
from mtexp.data.types import DataError

_PUNCT = "?!.,;:¿¡"
Piece = tuple[str, str | None, str | None]  # (text, slot name, list name); slot None: literal


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
    """One drawn sentence; `template` is the text of the template it was drawn from."""

    intent: str
    words: tuple[str, ...]
    tags: tuple[str, ...]
    spans: tuple[Span, ...]
    template: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        """Normalised text used for de-duplication."""
        return " ".join(self.words)


@dataclass(frozen=True)
class Template:
    """One sentence template with the rules and lists it may use.

    `numbers` narrows a range list to the given values (a split's share of held-out numbers).
    """

    sentence: Sentence
    rules: dict[str, Sentence]
    lists: dict[str, SlotList]
    numbers: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The template string as written in the intents package: what identifies a template."""
        return str(self.sentence.text)


class _Unfillable(Exception):
    """A template refers to a list or rule with no usable values."""


def load_templates(
    language: str, vocab: Vocabulary, skipped: Counter[str]
) -> dict[str, list[Template]]:
    """Usable templates per intent; skipped ones are counted by reason in `skipped`."""
    from home_assistant_intents import get_intents

    raw = get_intents(language)
    if raw is None:
        raise DataError(f"home-assistant-intents has no sentences for language {language!r}")
    intents = Intents.from_dict(raw)
    base_lists = {**intents.slot_lists, **vocab.slot_lists()}
    out: dict[str, list[Template]] = {}
    for name in sorted(intents.intents):
        rows: list[Template] = []
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
                rows.append(Template(sentence, rules, lists))
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


def template_slots(template: Template) -> frozenset[str]:
    """The slot names an expansion of the template can tag (rules followed, values not)."""
    found: set[str] = set()
    _collect_slots(template.sentence.expression, template.rules, found, ())
    return frozenset(found)


def _collect_slots(expr: Expression, rules: dict[str, Sentence], found: set[str], path: tuple) -> None:
    if isinstance(expr, Group):
        for item in expr.items:
            _collect_slots(item, rules, found, path)
    elif isinstance(expr, RuleReference) and expr.rule_name not in path:
        _collect_slots(rules[expr.rule_name].expression, rules, found, (*path, expr.rule_name))
    elif isinstance(expr, ListReference):
        found.add(expr.slot_name)


class Walker:
    """Draws one random expansion of a template as (text, slot, list name) pieces."""

    def __init__(self, rng: random.Random, language: str, number_words_prob: float) -> None:
        self.rng = rng
        self.language = language
        self.number_words_prob = number_words_prob

    def sample(self, intent: str, template: Template) -> BuiltinSentence | None:
        pieces: list[Piece] = []
        self._walk(template.sentence.expression, template, pieces, inside_slot=False)
        return assemble(intent, pieces, template.text)

    def _walk(self, expr: Expression, tpl: Template, out: list[Piece], inside_slot: bool) -> None:
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

    def _list_value(self, ref: ListReference, tpl: Template) -> str:
        inline = ref.get_inline_range()
        slot_list = RangeSlotList(None, *inline) if inline else tpl.lists[ref.list_name]
        if isinstance(slot_list, RangeSlotList):
            return self._number(slot_list, None if inline else tpl.numbers.get(ref.list_name))
        assert isinstance(slot_list, TextSlotList)
        inner: list[Piece] = []
        self._walk(self.rng.choice(slot_list.values).text_in, tpl, inner, inside_slot=True)
        return "".join(text for text, _, _ in inner)

    def _number(self, rl: RangeSlotList, choices: tuple[int, ...] | None) -> str:
        pool = range(rl.start, rl.stop + 1, rl.step) if choices is None else choices
        value: float = self.rng.choice(pool)
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


def assemble(intent: str, pieces: list[Piece], template: str = "") -> BuiltinSentence | None:
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
    return BuiltinSentence(intent, tuple(words), tuple(tags), tuple(spans), template)


def _add_literal(text: str, after_slot: bool, words: list[str], tags: list[str]) -> None:
    if after_slot:
        text = text.lstrip("-")
    for raw in text.lower().split():
        word = raw.strip(_PUNCT)
        if word:
            words.append(word)
            tags.append("O")
