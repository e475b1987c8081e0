"""The built-in corpus sampled from home-assistant-intents templates."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
from hassil import Intents
from hassil.intents import RangeSlotList, TextSlotList
from hassil.numbers import get_rbnf_engine
from hassil.sample import sample_expression
from home_assistant_intents import get_intents

from mtexp.data import data_config, load_data, load_preset
from mtexp.data.builtin import BuiltinDataset, BuiltinSource, generate_builtin, load_builtin
from mtexp.data.builtin_split import HOLDOUT_MIN_VALUES
from mtexp.data.builtin_vocab import VOCABULARIES, vocabulary
from mtexp.data.types import Corpus, DataError

LEGACY = {"split_by": "sentence", "holdout_values": False}
# sha256 of the splits (intent, words, tags per sentence) that the corpus had before the
# template split and held-out values existed, for seed 0: size 400 and the default 6000.
LEGACY_FINGERPRINTS = {
    400: "bcd43b6a6ad36ba5d705f13ead785512b5196afdbcb1b10bfe198bd18719a624",
    6000: "3e71bdc05ff802361c4e237fca9d1146e8dfe0b51ca949a8e9177f8ddde65d90",
}


@pytest.fixture(scope="module")
def default_set() -> BuiltinDataset:
    """The set of the `data=builtin` preset: split by template, values held out."""
    return generate_builtin(data_config(load_preset("builtin")).sources[0], seed=0)


@pytest.fixture(scope="module")
def legacy_set() -> BuiltinDataset:
    """The default size split by sentence from shared values: the corpus as it used to be."""
    return generate_builtin(BuiltinSource(**LEGACY), seed=0)


@pytest.fixture(scope="module")
def small_set() -> BuiltinDataset:
    """The default settings at a smaller size."""
    return generate_builtin(BuiltinSource(size=1500), seed=0)


@pytest.fixture(scope="module")
def allowed_values() -> dict[str, set[str]]:
    """Every text a list may contribute, computed with hassil's own exhaustive sampler."""
    intents = Intents.from_dict(get_intents("en"))
    engine = get_rbnf_engine("en")
    vocab = vocabulary("en", extended=True)
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


def _fingerprint(data: BuiltinDataset) -> str:
    rows = {split: [[r.intent, list(r.words), list(r.tags)] for r in rows]
            for split, rows in data.splits.items()}
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def test_legacy_options_reproduce_the_old_corpus(legacy_set: BuiltinDataset) -> None:
    assert _fingerprint(legacy_set) == LEGACY_FINGERPRINTS[6000]
    small = generate_builtin(BuiltinSource(size=400, **LEGACY), seed=0)
    assert _fingerprint(small) == LEGACY_FINGERPRINTS[400]
    assert legacy_set.stats["split_by"] == "sentence" and legacy_set.stats["holdout_values"] is False
    assert "held_out_values" not in legacy_set.stats


@pytest.mark.parametrize("split", ["test", "dev"])
def test_no_template_or_held_out_value_of_dev_or_test_in_train(
    small_set: BuiltinDataset, split: str
) -> None:
    train, held = small_set.splits["train"], small_set.splits[split]
    assert held and all(row.template for row in _rows(small_set))
    assert not {row.template for row in held} & {row.template for row in train}
    held_out = set(small_set.stats["held_out_values"])
    assert {"name", "area", "brightness", "timer_minutes"} <= held_out

    def values(rows, key):
        return {(getattr(sp, key), sp.text) for row in rows for sp in row.spans
                if sp.list_name in held_out}

    for key in ("list_name", "slot"):
        assert values(held, key) and not values(held, key) & values(train, key)
    assert not {row.key for row in held} & {row.key for row in train}


def test_each_template_lies_in_one_split(small_set: BuiltinDataset) -> None:
    owners: dict[str, set[str]] = {}
    for split, rows in small_set.splits.items():
        for row in rows:
            owners.setdefault(row.template, set()).add(split)
    assert max(len(splits) for splits in owners.values()) == 1
    assert {split for splits in owners.values() for split in splits} == {"train", "dev", "test"}


def test_shared_values_when_not_held_out() -> None:
    data = generate_builtin(BuiltinSource(size=1500, holdout_values=False), seed=0)
    assert "held_out_values" not in data.stats and data.stats["templates_per_split"]["test"] > 0
    train = {(sp.list_name, sp.text) for row in data.splits["train"] for sp in row.spans}
    test = {(sp.list_name, sp.text) for row in data.splits["test"] for sp in row.spans}
    assert {name for name, _ in train & test} >= {"area", "name"}
    test_templates = {row.template for row in data.splits["test"]}
    assert not test_templates & {row.template for row in data.splits["train"]}


def test_sentence_split_with_held_out_values_shares_templates_not_values() -> None:
    data = generate_builtin(BuiltinSource(size=1500, split_by="sentence"), seed=0)
    train, test = data.splits["train"], data.splits["test"]
    assert {row.template for row in test} & {row.template for row in train}
    areas = [{sp.text for row in rows for sp in row.spans if sp.list_name == "area"}
             for rows in (train, test)]
    assert areas[1] and not areas[0] & areas[1]


def test_every_evaluation_label_is_a_train_label(default_set: BuiltinDataset) -> None:
    train_intents = {row.intent for row in default_set.splits["train"]}
    train_tags = {tag for row in default_set.splits["train"] for tag in row.tags}
    for split in ("dev", "test"):
        assert {row.intent for row in default_set.splits[split]} <= train_intents
        assert {tag for row in default_set.splits[split] for tag in row.tags} <= train_tags


def test_held_out_lists_and_the_extended_vocabulary() -> None:
    extended = vocabulary("en", extended=True)
    assert vocabulary("en") is VOCABULARIES["en"]
    names = [n for values in extended.names_by_domain.values() for n in values]
    assert len(names) == len(set(names))  # a name belongs to one domain, so to one split
    open_lists = [*extended.names_by_domain.values(), extended.areas, extended.floors,
                  *extended.wildcards.values()]
    assert min(len(values) for values in open_lists) >= HOLDOUT_MIN_VALUES
    for domain, core in VOCABULARIES["en"].names_by_domain.items():
        assert extended.names_by_domain[domain][: len(core)] == core


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
    sizes = default_set.stats["sizes"]
    assert min(sizes["dev"], sizes["test"]) >= 500 and sizes["train"] >= 4500
    assert default_set.stats["split_by"] == "template" and default_set.stats["holdout_values"]


@pytest.mark.parametrize("name", ["default_set", "legacy_set"])
def test_no_sentence_in_two_splits(name: str, request: pytest.FixtureRequest) -> None:
    keys = Counter(" ".join(row.words).lower() for row in _rows(request.getfixturevalue(name)))
    assert max(keys.values()) == 1


def test_sentence_split_is_stratified_by_intent(legacy_set: BuiltinDataset) -> None:
    per_split = {name: Counter(r.intent for r in rows) for name, rows in legacy_set.splits.items()}
    sizes = legacy_set.stats["sizes"]
    assert abs(sizes["dev"] / sum(sizes.values()) - 0.1) < 0.02
    for intent, n_train in per_split["train"].items():
        assert n_train > 0 and per_split["dev"][intent] > 0 and per_split["test"][intent] > 0


def test_template_split_is_stratified_and_keeps_small_intents_in_train(
    default_set: BuiltinDataset,
) -> None:
    per_split = {name: Counter(r.intent for r in rows) for name, rows in default_set.splits.items()}
    sizes, stats = default_set.stats["sizes"], default_set.stats
    assert abs(sizes["dev"] / sum(sizes.values()) - 0.1) < 0.02
    train_only = set(stats["train_only_intents"])
    assert {"HassBroadcast", "HassGetCurrentTime"} <= train_only
    assert stats["train_only_intent_count"] == len(train_only) < stats["intents"] / 3
    for intent, n_train in per_split["train"].items():
        evaluated = per_split["dev"][intent] > 0 and per_split["test"][intent] > 0
        assert n_train > 0 and evaluated == (intent not in train_only), intent
    assert stats["intents_per_split"]["test"] == stats["intents"] - len(train_only)
    templates = stats["templates_per_split"]
    assert templates["test"] >= 0.08 * sum(templates.values())


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


def test_split_statistics_reach_the_data_statistics() -> None:
    cfg = load_preset("builtin")
    cfg.size = 400
    corpus = load_data(cfg, seed=0).stats["corpora"]["builtin"]
    source = corpus["source"]
    assert source["split_by"] == "template" and source["holdout_values"] is True
    assert source["sizes"] == corpus["sizes"] and "train_only_intents" in source
    assert "name" in source["held_out_values"] and "seconds" not in source
    cfg.split_by, cfg.holdout_values = "sentence", False
    legacy = load_data(cfg, seed=0).stats["corpora"]["builtin"]["source"]
    assert legacy["split_by"] == "sentence" and "train_only_intents" not in legacy


def test_bad_config_is_a_data_error() -> None:
    with pytest.raises(DataError, match="split_by: expected one of"):
        BuiltinSource(split_by="words")
    with pytest.raises(DataError, match=r"data\.split_by: expected one of \('template', 'sentence'\)"):
        data_config({"source": "builtin", "split_by": "templates"})
    with pytest.raises(DataError, match=r"data\.holdout_values: expected bool, got 'yes'"):
        data_config({"source": "builtin", "holdout_values": "yes"})
    with pytest.raises(DataError, match=r"data\.sources\[0\]\.split_by"):
        data_config({"sources": [{"source": "builtin", "split_by": 1}]})
    with pytest.raises(DataError, match="fraction"):
        BuiltinSource(dev_fraction=0.6, test_fraction=0.5)
    with pytest.raises(DataError, match="size"):
        BuiltinSource(size=0)
    with pytest.raises(DataError, match="language"):
        generate_builtin(BuiltinSource(language="xx"), seed=0)
    with pytest.raises(DataError, match=r"data\.size: expected a positive integer"):
        data_config({"source": "builtin", "size": 0})
