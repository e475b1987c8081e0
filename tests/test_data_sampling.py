"""Disjoint data (a CSV + a CoNLL corpus): task sampling strategies and length grouping."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtexp.data import (
    SamplingConfig,
    build_features,
    load_data,
    load_preset,
    task_probabilities,
    train_batches,
)
from mtexp.data.batching import allocate

PROPORTIONAL = SamplingConfig("proportional")
ENTITIES = [("Paris", "LOC"), ("Angela Merkel", "PER"), ("Siemens", "ORG"), ("New York City", "LOC")]


def write_disjoint(root: Path) -> tuple[Path, Path]:
    """A 240-row review CSV (one file: dev/test carved) and a CoNLL folder (train/dev/test)."""
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "plot", "actors", "long", "short", "fine", "boring", "great"]
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 30))) for _ in range(240)]
    labels = ["pos" if "good" in t else "neg" for t in texts]
    table = root / "reviews.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(table, index=False)
    conll = root / "conll"
    conll.mkdir()
    for split, n in (("train", 60), ("dev", 10), ("test", 10)):
        lines = ["-DOCSTART- O", ""]
        for i in range(n):
            name, kind = ENTITIES[i % len(ENTITIES)]
            parts = name.split()
            lines += [*(f"{w} I-{kind}" for w in parts), "visited O", f"day{i} O", ""]
        (conll / f"{split}.txt").write_text("\n".join(lines), encoding="utf-8")
    return table, conll


@pytest.fixture(scope="module")
def disjoint(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("disjoint")
    table, conll = write_disjoint(root)
    cfg = load_preset("disjoint_example")
    cfg.sources[0].path = str(table)
    cfg.sources[1].path = str(conll)
    data = load_data(cfg, seed=0)
    return build_features(data, tokenizer, max_length=64)


def test_disjoint_preset_loads(disjoint) -> None:
    data = disjoint.data
    assert not data.joint
    assert [(t.name, t.kind) for t in data.tasks] == [("sentiment", "sequence"), ("ner", "token")]
    assert data.task("ner").labels == ("O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER")
    reviews, conll = data.corpora
    assert reviews.sizes() == {"train": 194, "dev": 22, "test": 24}
    assert conll.sizes() == {"train": 60, "dev": 10, "test": 10}
    assert data.stats["corpora"]["reviews"]["carved"] == ["dev", "test"]
    assert data.stats["corpora"]["conll"]["iob1_converted"]["train"] == 60
    merkel = conll.splits["train"][1]
    assert merkel.words[:2] == ["Angela", "Merkel"]
    assert merkel.labels["ner"][:3] == ["B-PER", "I-PER", "O"]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("proportional", {"reviews": 194 / 254, "conll": 60 / 254}),
        ("temperature", {"reviews": 194**0.5 / (194**0.5 + 60**0.5),
                         "conll": 60**0.5 / (194**0.5 + 60**0.5)}),
        ("round_robin", {"reviews": 0.5, "conll": 0.5}),
    ],
)
def test_sampling_strategies_give_the_expected_task_shares(disjoint, strategy, expected) -> None:
    sampling = SamplingConfig(strategy, temperature=2.0, steps_per_epoch=301)
    batches = train_batches(disjoint, batch_size=8, sampling=sampling, seed=0, epoch=0)
    seen: Counter = Counter()
    for batch in batches:
        seen[batch["corpus"]] += 1
        task = "sentiment" if batch["corpus"] == "reviews" else "ner"
        assert list(batch["labels"]) == [task]
        assert batch["input_ids"].shape[0] <= 8
    assert sum(seen.values()) == len(batches) == 301
    for corpus, share in expected.items():
        assert abs(seen[corpus] - share * 301) <= 1, (corpus, seen)
    assert batches.step_counts == {"sentiment": seen["reviews"], "ner": seen["conll"]}
    assert batches.corpus_steps == dict(seen)


def test_round_robin_alternates_and_default_budget_is_one_pass(disjoint) -> None:
    batches = train_batches(disjoint, batch_size=8, sampling=SamplingConfig("round_robin"))
    assert len(batches) == math.ceil(194 / 8) + math.ceil(60 / 8)
    assert batches.plan[:4] == ["reviews", "conll", "reviews", "conll"]


def test_epochs_and_seeds_change_the_order_reproducibly(disjoint) -> None:
    def order(seed: int, epoch: int) -> list[list[int]]:
        batches = train_batches(disjoint, 8, PROPORTIONAL, seed=seed, epoch=epoch)
        return [b["example_index"].tolist() for b in batches]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)


def test_one_pass_covers_every_example_once(disjoint) -> None:
    batches = train_batches(disjoint, 8, PROPORTIONAL, group_by_length=True)
    covered: dict[str, list[int]] = {"reviews": [], "conll": []}
    for batch in batches:
        covered[batch["corpus"]] += batch["example_index"].tolist()
    assert sorted(covered["reviews"]) == list(range(194))
    assert sorted(covered["conll"]) == list(range(60))


def test_length_grouping_reduces_padding(disjoint) -> None:
    def padding(group: bool) -> int:
        batches = train_batches(disjoint, 8, PROPORTIONAL, group_by_length=group)
        return sum(int((b["attention_mask"] == 0).sum()) for b in batches)

    assert padding(True) < padding(False) / 2


def test_probabilities_and_allocation() -> None:
    sizes = {"a": 900, "b": 100}
    assert task_probabilities(sizes, "proportional") == pytest.approx({"a": 0.9, "b": 0.1})
    assert task_probabilities(sizes, "temperature", 2.0) == pytest.approx({"a": 0.75, "b": 0.25})
    assert task_probabilities(sizes, "temperature", 1e9)["a"] == pytest.approx(0.5)
    assert task_probabilities(sizes, "round_robin") == {"a": 0.5, "b": 0.5}
    assert allocate(7, {"a": 0.5, "b": 0.5}) == {"a": 4, "b": 3}
    assert sum(allocate(101, {"a": 0.33, "b": 0.33, "c": 0.34}).values()) == 101
