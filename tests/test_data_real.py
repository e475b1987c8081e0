"""SNIPS and ATIS from ../shared/data: sizes, unseen labels, and the sub-token round trip."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mtexp.data import (
    SEQUENCE_FALLBACK,
    DataError,
    build_features,
    load_data,
    load_preset,
    token_predictions_to_words,
)


def preset(name: str, shared_data: Path):
    return load_preset(name, f"data.path={shared_data / name}")


def batches(features, corpus: str, split: str, size: int):
    """The split's rows in order, collated as evaluation batches are."""
    table = features.table(corpus, split)
    for start in range(0, len(table), size):
        yield features.collator.collate(table, np.arange(start, min(start + size, len(table))), corpus)


def assert_round_trip(features) -> int:
    """Aligned sub-token labels mapped back to words equal every sentence's tags."""
    checked = 0
    for corpus in features.data.corpora:
        ids = features.data.task("slots").label_to_id()
        for split, examples in corpus.splits.items():
            assert features.stats["truncation"][f"{corpus.name}/{split}"]["examples"] == 0
            for batch in batches(features, corpus.name, split, size=512):
                labels, word_ids = batch["labels"]["slots"].numpy(), batch["word_ids"].numpy()
                for row, index in enumerate(batch["example_index"].tolist()):
                    tags = examples[index].labels["slots"]
                    words = token_predictions_to_words(labels[row], word_ids[row], len(tags))
                    assert words == [ids[t] for t in tags], (split, index)
                    checked += 1
    return checked


def raw_tags(folder: Path) -> list[list[str]]:
    return [line.split() for line in (folder / "seq.out").read_text().splitlines()]


def test_snips_sizes_intents_and_round_trip(shared_data: Path, tokenizer) -> None:
    data = load_data(preset("snips", shared_data), seed=0)
    assert data.joint and data.corpora[0].sizes() == {"train": 13084, "dev": 700, "test": 700}
    assert data.task("intent").labels == (
        "AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook",
        "SearchCreativeWork", "SearchScreeningEvent",
    )
    test_intents = Counter(ex.labels["intent"] for ex in data.corpora[0].splits["test"])
    assert test_intents["AddToPlaylist"] == 124 and test_intents["RateBook"] == 80
    assert data.stats["unseen_labels"] == {}
    corpus = data.corpora[0]
    for split in ("train", "dev", "test"):  # tags are the files' tags, unchanged
        assert [ex.labels["slots"] for ex in corpus.splits[split]] == raw_tags(
            shared_data / "snips" / split)
    features = build_features(data, tokenizer, max_length=128)
    assert assert_round_trip(features) == 13084 + 700 + 700


def test_atis_unseen_labels_error_by_default(shared_data: Path) -> None:
    cfg = preset("atis", shared_data)
    cfg.unseen_label = "error"
    with pytest.raises(DataError, match=r"task 'intent'.*split 'dev'.*atis_airfare#atis_flight_time"):
        load_data(cfg, seed=0)


def test_atis_with_fallback_sizes_and_round_trip(shared_data: Path, tokenizer) -> None:
    data = load_data(preset("atis", shared_data), seed=0)
    corpus = data.corpora[0]
    assert corpus.sizes() == {"train": 4478, "dev": 500, "test": 893}
    intents = data.task("intent").labels
    assert len(intents) == 21 + 1 and intents[-1] == SEQUENCE_FALLBACK
    assert "atis_flight#atis_airfare" in intents  # `#`-joined multi-intents are labels
    unseen = data.stats["unseen_labels"]
    assert unseen["intent"]["test"] == {
        "atis_airfare#atis_flight": 1, "atis_day_name": 2,
        "atis_flight#atis_airline": 1, "atis_flight_no#atis_airline": 1,
    }
    test_intents = Counter(ex.labels["intent"] for ex in corpus.splits["test"])
    assert test_intents[SEQUENCE_FALLBACK] == 5
    # every type has B- and I-, so only the six test tags of types absent from train remain
    assert sorted(unseen["slots"]["test"]) == [
        "B-booking_class", "B-compartment", "B-flight", "B-stoploc.airport_code"]
    assert "dev" not in unseen["slots"]
    changed = sum(ex.labels["slots"] != raw for ex, raw in
                  zip(corpus.splits["test"], raw_tags(shared_data / "atis" / "test"), strict=True))
    assert changed == 4
    features = build_features(data, tokenizer, max_length=128)
    assert assert_round_trip(features) == 4478 + 500 + 893
    lengths = np.concatenate([features.table("atis", s).lengths for s in ("train", "dev", "test")])
    assert lengths.max() <= 128


def test_snips_subsample_for_learning_curves(shared_data: Path) -> None:
    cfg = preset("snips", shared_data)
    cfg.train_fraction = 0.05
    data = load_data(cfg, seed=0)
    counts = Counter(ex.labels["intent"] for ex in data.corpora[0].splits["train"])
    assert sum(counts.values()) == round(13084 * 0.05)
    assert set(counts) == set(data.task("intent").labels)
    assert max(counts.values()) - min(counts.values()) <= 6  # SNIPS train is near balanced
