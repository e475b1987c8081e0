"""The built-in corpus sampled from home-assistant-intents templates."""

from __future__ import annotations

from collections import Counter

import pytest
from hassil import Intents
from hassil.intents import RangeSlotList, TextSlotList
from hassil.numbers import get_rbnf_engine
from hassil.sample import sample_expression
from home_assistant_intents import get_intents

from mtexp.data import data_config, load_preset
from mtexp.data.builtin import BuiltinDataset, BuiltinSource, generate_builtin, load_builtin
from mtexp.data.builtin_vocab import VOCABULARIES
from mtexp.data.types import Corpus, DataError


@pytest.fixture(scope="module")
def default_set() -> BuiltinDataset:
    """The set of the `data=builtin` preset."""
    return generate_builtin(data_config(load_preset("builtin")).sources[0], seed=0)


@pytest.fixture(scope="module")
def allowed_values() -> dict[str, set[str]]:
    """Every text a list may contribute, computed with hassil's own exhaustive sampler."""
    intents = Intents.from_dict(get_intents("en"))
    engine = get_rbnf_engine("en")
    vocab = VOCABULARIES["en"]
    allowed: dict[str, set[str]] = {name: set(values) for name, values in vocab.wildcards.items()}
    allowed["area"] = set(vocab.areas)
    allowed["floor"] = set(vocab.floors)
    allowed["name"] = set(vocab.names(None))
    for name, slot_list in intents.slot_lists.items():
        if isinstance(slot_list, TextSlotList):
            allowed[name] = {
                " ".join(text.lower().split())
                for value in slot_list.values
                for text in sample_expression(value.text_in, intents.slot_lists)
            }
        elif isinstance(slot_list, RangeSlotList):
            numbers = list(slot_list.get_numbers())
            allowed[name] = {str(n) for n in numbers} | {
                text for n in numbers for text in engine.format_number(n).text_by_ruleset.values()
            }
    return allowed


def _rows(data: BuiltinDataset):
    return [row for rows in data.splits.values() for row in rows]


def test_same_seed_same_data_other_seed_differs() -> None:
    cfg = BuiltinSource(size=800)
    first, again, other = (generate_builtin(cfg, s) for s in (7, 7, 8))
    assert first.splits == again.splits
    assert first.splits["train"] != other.splits["train"]
    assert load_builtin(cfg, 7).splits == load_builtin(cfg, 7).splits


def test_default_set_covers_many_intents_and_slot_types(default_set: BuiltinDataset) -> None:
    rows = _rows(default_set)
    intents = {row.intent for row in rows}
    slot_types = {span.slot for row in rows for span in row.spans}
    assert len(intents) >= 25
    assert len(slot_types) >= 10
    assert default_set.stats["intents"] == len(intents)
    assert default_set.stats["slot_types"] == len(slot_types)
    assert 5500 <= len(rows) <= 6000
    assert default_set.stats["seconds"] < 20


def test_no_sentence_in_two_splits(default_set: BuiltinDataset) -> None:
    keys = Counter(" ".join(row.words).lower() for row in _rows(default_set))
    assert max(keys.values()) == 1


def test_splits_are_stratified_by_intent(default_set: BuiltinDataset) -> None:
    per_split = {name: Counter(r.intent for r in rows) for name, rows in default_set.splits.items()}
    sizes = default_set.stats["sizes"]
    assert abs(sizes["dev"] / sum(sizes.values()) - 0.1) < 0.02
    for intent, n_train in per_split["train"].items():
        assert n_train > 0 and per_split["dev"][intent] > 0 and per_split["test"][intent] > 0


def test_every_span_is_a_value_of_its_list(
    default_set: BuiltinDataset, allowed_values: dict[str, set[str]]
) -> None:
    for row in _rows(default_set):
        for span in row.spans:
            assert " ".join(row.words[span.start : span.end]) == span.text
            assert span.text in allowed_values[span.list_name], (span, row.words)


def test_tags_are_iob2_and_aligned(default_set: BuiltinDataset) -> None:
    for row in _rows(default_set):
        assert len(row.words) == len(row.tags) > 0
        for word in row.words:
            assert word and word == word.lower() and word == "".join(word.split())
        expected = ["O"] * len(row.words)
        for span in row.spans:
            expected[span.start] = f"B-{span.slot}"
            expected[span.start + 1 : span.end] = [f"I-{span.slot}"] * (span.end - span.start - 1)
        assert list(row.tags) == expected
        for prev, tag in zip(("O", *row.tags[:-1]), row.tags, strict=True):
            if tag.startswith("I-"):
                assert prev[2:] == tag[2:] and prev != "O"


def test_load_builtin_returns_a_joint_corpus() -> None:
    corpus = load_builtin(BuiltinSource(size=500, dev_fraction=0.2, test_fraction=0.2), seed=1)
    assert isinstance(corpus, Corpus)
    assert corpus.name == "builtin" and corpus.tasks == ("intent", "slots")
    assert set(corpus.splits) == {"train", "dev", "test"}
    example = corpus.splits["train"][0]
    assert isinstance(example.labels["intent"], str)
    assert len(example.labels["slots"]) == len(example.words)
    sizes = corpus.sizes()
    assert sizes["dev"] == pytest.approx(0.2 * sum(sizes.values()), rel=0.2)


def test_template_cap_and_small_intents_dropped() -> None:
    data = generate_builtin(BuiltinSource(size=600, max_templates_per_intent=2), seed=0)
    assert data.stats["templates_used"] <= 2 * 42
    assert "HassNevermind" in data.stats["dropped_intents"]
    assert data.stats["templates_skipped"] == 0


def test_bad_config_is_a_data_error() -> None:
    with pytest.raises(DataError, match="fraction"):
        BuiltinSource(dev_fraction=0.6, test_fraction=0.5)
    with pytest.raises(DataError, match="size"):
        BuiltinSource(size=0)
    with pytest.raises(DataError, match="language"):
        generate_builtin(BuiltinSource(language="xx"), seed=0)
    with pytest.raises(DataError, match=r"data\.size: expected a positive integer"):
        data_config({"source": "builtin", "size": 0})
