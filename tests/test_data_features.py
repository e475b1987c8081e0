"""Sub-token features: label alignment, truncation, the collator and the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from mtexp.data import (
    IGNORE_INDEX,
    Corpus,
    Example,
    MultiTaskData,
    TaskSpec,
    build_features,
    make_collator,
    token_predictions_to_words,
)
from mtexp.data import features as features_module
from mtexp.data.align import align_labels

SLOTS = TaskSpec("slots", "token", ("O", "B-artist", "B-genre", "I-artist", "I-genre"))
INTENT = TaskSpec("intent", "sequence", ("AddToPlaylist", "PlayMusic"))
SENTENCES = [
    (["play", "westbam", "unaffable", "jazz"], ["O", "B-artist", "I-artist", "B-genre"], "PlayMusic"),
    (["add", "clásicos", "to", "my", "playlist"], ["O", "B-genre", "O", "O", "O"], "AddToPlaylist"),
    (["westbam"], ["B-artist"], "PlayMusic"),
]


def make_data(name: str = "tiny", sentences=SENTENCES) -> MultiTaskData:
    examples = [Example(list(w), {"slots": list(t), "intent": i}) for w, t, i in sentences]
    splits = {split: [Example(list(e.words), dict(e.labels)) for e in examples]
              for split in ("train", "dev", "test")}
    corpus = Corpus(name, ("intent", "slots"), splits)
    return MultiTaskData(name, [INTENT, SLOTS], [corpus], joint=True)


def collate_rows(features, split: str, rows) -> dict:
    """A batch of the given rows of the "tiny" corpus, collated as evaluation batches are."""
    return features.collator.collate(features.table("tiny", split), np.asarray(rows), "tiny")


def word_labels(features, split: str = "test") -> list[list[str]]:
    """Aligned labels mapped back to words through token_predictions_to_words."""
    table = features.table("tiny", split)
    batch = collate_rows(features, split, range(len(table)))
    out = []
    for row in range(len(table)):
        ids = token_predictions_to_words(batch["labels"]["slots"][row], batch["word_ids"][row],
                                         int(batch["n_words"][row]))
        out.append([SLOTS.labels[i] for i in ids])
    return out


def test_first_sub_token_carries_the_word_label(tokenizer) -> None:
    features = build_features(make_data(), tokenizer, max_length=32)
    row = features.datasets[("tiny", "train")][0]
    pieces = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert pieces == ["[CLS]", "play", "west", "##ba", "##m", "una", "##ffa", "##ble", "jazz", "[SEP]"]
    assert row["word_ids"] == [-1, 0, 1, 1, 1, 2, 2, 2, 3, -1]
    x = IGNORE_INDEX
    assert row["labels.slots"] == [x, 0, 1, x, x, 3, x, x, 2, x]
    assert row["labels.intent"] == 1
    assert word_labels(features) == [t for _, t, _ in SENTENCES]


def test_label_all_tokens_turns_b_into_i_on_continuations(tokenizer) -> None:
    features = build_features(make_data(), tokenizer, max_length=32, label_all_tokens=True)
    row = features.datasets[("tiny", "train")][0]
    x = IGNORE_INDEX
    assert row["labels.slots"] == [x, 0, 1, 3, 3, 3, 3, 3, 2, x]
    assert word_labels(features) == [t for _, t, _ in SENTENCES]


def test_truncation_is_counted_and_lost_words_predicted_o(tokenizer) -> None:
    features = build_features(make_data(), tokenizer, max_length=6)
    trunc = features.stats["truncation"]["tiny/test"]
    assert trunc["examples"] == 2 and trunc["words_lost"] == 2 + 3
    assert features.stats["truncated_examples"] == 6
    assert word_labels(features)[0] == ["O", "B-artist", "O", "O"]


def test_token_predictions_to_words_takes_first_piece() -> None:
    preds = torch.tensor([9, 4, 1, 2, 2, 3, 9, 9])
    word_ids = torch.tensor([-1, 0, 1, 1, 1, 2, -1, -1])
    assert token_predictions_to_words(preds, word_ids, 4) == [4, 1, 3, 0]
    assert token_predictions_to_words(preds, word_ids, 4, fill=7)[-1] == 7


def test_collator_pads_rows_like_the_table_path(tokenizer) -> None:
    features = build_features(make_data(), tokenizer, max_length=32)
    ds = features.datasets[("tiny", "train")]
    from_rows = make_collator(tokenizer)([ds[i] for i in range(3)])
    from_table = collate_rows(features, "train", range(3))
    for key in ("input_ids", "attention_mask", "token_type_ids", "word_ids", "example_index"):
        assert torch.equal(from_rows[key], from_table[key]), key
    for task in ("slots", "intent"):
        assert torch.equal(from_rows["labels"][task], from_table["labels"][task])
    assert from_table["corpus"] == "tiny" and from_table["input_ids"].shape == (3, 10)
    assert from_table["input_ids"].dtype == torch.long
    assert from_table["input_ids"][2, 5:].eq(tokenizer.pad_token_id).all()
    assert from_table["attention_mask"][2].tolist() == [1] * 5 + [0] * 5
    assert from_table["labels"]["slots"][2, 5:].eq(IGNORE_INDEX).all()
    assert from_table["word_ids"][2, 5:].eq(-1).all()


def test_a_batch_in_any_row_order_maps_back_to_its_examples(tokenizer) -> None:
    features = build_features(make_data(), tokenizer, max_length=32)
    batches = [collate_rows(features, "dev", rows) for rows in ([2, 0], [1])]
    assert [b["example_index"].tolist() for b in batches] == [[2, 0], [1]]


def test_cache_is_reused_without_retokenising(tokenizer, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    first = build_features(make_data(), tokenizer, max_length=32, cache_dir=cache)
    assert first.stats["cache"] == "miss" and first.cache_path.parent == cache

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(features_module, "tokenize_batch", no_tokenising)
    second = build_features(make_data(), tokenizer, max_length=32, cache_dir=cache)
    assert second.stats["cache"] == "hit" and second.cache_path == first.cache_path
    ds1, ds2 = first.datasets[("tiny", "test")], second.datasets[("tiny", "test")]
    assert ds1.to_list() == ds2.to_list()
    assert [p.name for p in cache.iterdir()] == [first.cache_path.name]
    with pytest.raises(AssertionError, match="tokenised again"):  # other settings, other key
        build_features(make_data(), tokenizer, max_length=16, cache_dir=cache)


def test_cache_key_follows_data_content(tokenizer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = build_features(make_data(), tokenizer, max_length=32, cache_dir=cache)
    changed = [(["play", "jazz"], ["O", "B-genre"], "PlayMusic"), *SENTENCES[1:]]
    b = build_features(make_data(sentences=changed), tokenizer, max_length=32, cache_dir=cache)
    c = build_features(make_data(), tokenizer, max_length=32, cache_dir=cache, label_all_tokens=True)
    assert len({a.cache_path, b.cache_path, c.cache_path}) == 3


def test_nothing_is_written_on_failure(tokenizer, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    calls = {"n": 0}
    real_save = datasets.Dataset.save_to_disk

    def failing_save(self, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", failing_save)
    with pytest.raises(OSError, match="disk full"):
        build_features(make_data(), tokenizer, max_length=32, cache_dir=cache)
    assert list(cache.iterdir()) == []

    def broken(*args, **kwargs):
        raise RuntimeError("tokenizer failed")

    monkeypatch.setattr(features_module, "tokenize_batch", broken)
    with pytest.raises(RuntimeError, match="tokenizer failed"):
        build_features(make_data(), tokenizer, max_length=32, cache_dir=tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_alignment_is_vectorised_numpy() -> None:
    word_ids = np.array([-1, 0, 0, 1, -1])
    labels = np.array([1, 2])
    continuation = np.array([0, 3, 4, 3, 4])
    assert align_labels(word_ids, labels, continuation, False).tolist() == [
        -100, 1, -100, 2, -100]
    assert align_labels(word_ids, labels, continuation, True).tolist() == [
        -100, 1, 3, 2, -100]


def test_words_without_sub_tokens_become_unk(tokenizer) -> None:
    sentences = [(["play", "\ufffd\ufffd", "jazz"], ["O", "B-genre", "I-genre"], "PlayMusic"),
                 (["jazz", "\ufffd"], ["B-genre", "O"], "PlayMusic")]
    features = build_features(make_data(sentences=sentences), tokenizer, max_length=32)
    row = features.datasets[("tiny", "train")][0]
    assert tokenizer.convert_ids_to_tokens(row["input_ids"])[2] == tokenizer.unk_token
    assert features.stats["unk_words"]["tiny/train"] == 2
    assert word_labels(features) == [t for _, t, _ in sentences]
    assert "unk_words" not in collate_rows(features, "test", [0, 1])
    ds = features.datasets[("tiny", "train")]
    assert "unk_words" not in make_collator(tokenizer)([ds[0], ds[1]])
