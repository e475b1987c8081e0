"""Frozen-feature cache: heads trained on cached encoder outputs match the full path."""

from __future__ import annotations

import copy

import pytest
import torch

from mtexp.data.types import TaskSpec
from mtexp.feature_cache import FeatureCache
from mtexp.freezing import FreezingConfig, apply_freezing, set_frozen_modules_eval
from mtexp.model import MultiTaskModel
from mtexp.optim import OptimConfig, build_optimizer

TASKS = [
    TaskSpec("intent", "sequence", ("a", "b", "c")),
    TaskSpec("slots", "token", ("O", "B-x", "I-x", "B-y")),
]


def make_examples(corpus: str, count: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(count):
        length = int(torch.randint(3, 12, (1,), generator=generator))
        examples.append(
            {
                "corpus": corpus,
                "example_index": index,
                "input_ids": torch.randint(1000, 5000, (length,), generator=generator),
                "intent": int(torch.randint(0, 3, (1,), generator=generator)),
                "slots": torch.randint(0, 4, (length,), generator=generator),
            }
        )
    return examples


def collate(examples: list[dict]) -> dict:
    """Right-padded batch as the data collator makes it (one corpus per batch)."""
    width = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    slots = torch.full_like(input_ids, -100)
    for row, example in enumerate(examples):
        length = len(example["input_ids"])
        input_ids[row, :length] = example["input_ids"]
        mask[row, :length] = 1
        slots[row, :length] = example["slots"]
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "labels": {"intent": torch.tensor([e["intent"] for e in examples]), "slots": slots},
        "example_index": torch.tensor([e["example_index"] for e in examples]),
        "corpus": examples[0]["corpus"],
    }


def batches(examples: list[dict], size: int, seed: int | None = None) -> list[dict]:
    order = list(range(len(examples)))
    if seed is not None:
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = [examples[i] for i in order]
    return [collate(chosen[i : i + size]) for i in range(0, len(chosen), size)]


@pytest.fixture(scope="module")
def corpora() -> dict[str, list[dict]]:
    return {"snips": make_examples("snips", 14, 0), "atis": make_examples("atis", 9, 1)}


@pytest.fixture
def cache_and_model(tiny_encoder, corpora):
    model = MultiTaskModel(copy.deepcopy(tiny_encoder), TASKS, head_hidden=16, head_dropout=0.0)
    apply_freezing(model, FreezingConfig("backbone"))
    model.train()
    built = [batch for examples in corpora.values() for batch in batches(examples, 4)]
    cache = FeatureCache.build(model.encoder, built, device="cpu")
    assert model.encoder.training  # build restores the mode it found
    return cache, model


def assert_same_logits(full, cached, mask: torch.Tensor) -> None:
    torch.testing.assert_close(cached.logits["intent"], full.logits["intent"], atol=1e-5, rtol=0)
    keep = mask.bool()
    torch.testing.assert_close(cached.logits["slots"][keep], full.logits["slots"][keep], atol=1e-5, rtol=0)


def test_cached_features_match_full_path_for_shuffled_batches(cache_and_model, corpora):
    cache, model = cache_and_model
    model.eval()
    assert len(cache) == 23
    with torch.no_grad():
        for examples in corpora.values():
            for batch in batches(examples, 5, seed=7):
                token_states, pooled = cache.features_for(batch)
                assert token_states.shape[:2] == batch["input_ids"].shape
                assert not token_states[batch["attention_mask"] == 0].any()
                full = model(batch)
                cached = model.forward_features(token_states, pooled, batch["labels"])
                assert_same_logits(full, cached, batch["attention_mask"])
                torch.testing.assert_close(cached.loss, full.loss, atol=1e-5, rtol=0)


def test_heads_trained_on_cache_match_full_path(cache_and_model, corpora):
    cache, full_model = cache_and_model
    cached_model = copy.deepcopy(full_model)
    initial = cached_model.heads["intent"][1].weight.detach().clone()
    cfg = OptimConfig(lr_head=1e-2)
    optimizers = [build_optimizer(m, cfg) for m in (full_model, cached_model)]
    for model in (full_model, cached_model):
        model.train()
        set_frozen_modules_eval(model)
    for epoch in range(2):
        for batch in batches(corpora["snips"], 4, seed=epoch) + batches(corpora["atis"], 3, seed=epoch):
            for optimizer in optimizers:
                optimizer.zero_grad()
            full_model(batch).loss.backward()
            features = cache.features_for(batch)
            cached_model.forward_features(*features, batch["labels"]).loss.backward()
            for optimizer in optimizers:
                optimizer.step()
    full_model.eval()
    cached_model.eval()
    batch = batches(corpora["snips"], 6, seed=3)[0]
    with torch.no_grad():
        full = full_model(batch)
        cached = cached_model.forward_features(*cache.features_for(batch), batch["labels"])
    assert_same_logits(full, cached, batch["attention_mask"])
    assert not torch.equal(initial, cached_model.heads["intent"][1].weight)


def test_storage_is_flat_and_memory_estimate_matches(cache_and_model, corpora):
    cache, model = cache_and_model
    total_tokens = sum(len(e["input_ids"]) for examples in corpora.values() for e in examples)
    assert cache.tokens.shape == (total_tokens, model.encoder.hidden_size)
    assert cache.pooled.shape == (23, model.encoder.hidden_size)
    assert cache.memory_bytes() == FeatureCache.estimate_bytes(total_tokens, 23, model.encoder.hidden_size)
    half = FeatureCache.estimate_bytes(total_tokens, 23, model.encoder.hidden_size, torch.float16)
    assert half < cache.memory_bytes()


def test_half_precision_storage_returns_float32(tiny_encoder, corpora):
    encoder = copy.deepcopy(tiny_encoder)
    cache = FeatureCache.build(encoder, batches(corpora["atis"], 4), "cpu", dtype=torch.float16)
    assert cache.tokens.dtype == torch.float16
    token_states, pooled = cache.features_for(batches(corpora["atis"], 9)[0])
    assert token_states.dtype == pooled.dtype == torch.float32


def test_missing_or_stale_examples_raise(cache_and_model, corpora):
    cache, _ = cache_and_model
    batch = batches(corpora["snips"], 4)[0]
    with pytest.raises(KeyError, match="'other' is not in the feature cache"):
        cache.features_for({**batch, "corpus": "other"})
    with pytest.raises(KeyError, match="not in the feature cache"):
        cache.features_for({**batch, "example_index": batch["example_index"] + 100})
    shorter = batch["attention_mask"].clone()
    shorter[0, shorter[0].sum() - 1] = 0
    stale = {**batch, "attention_mask": shorter}
    with pytest.raises(ValueError, match="stale"):
        cache.features_for(stale)


def test_left_padding_rejected(tiny_encoder, corpora):
    batch = batches(corpora["snips"], 4)[0]
    left = {**batch, "attention_mask": batch["attention_mask"].flip(1)}
    with pytest.raises(ValueError, match="right-padded"):
        FeatureCache.build(copy.deepcopy(tiny_encoder), [left], "cpu")


def test_splits_with_overlapping_indices(tiny_encoder):
    encoder = copy.deepcopy(tiny_encoder)
    train, dev = make_examples("snips", 6, 3), make_examples("snips", 5, 4)
    tagged = [{**b, "split": "train"} for b in batches(train, 4)] + [
        {**b, "split": "dev"} for b in batches(dev, 4)
    ]
    with pytest.raises(ValueError, match="example_index repeats in 'snips'"):
        FeatureCache.build(encoder, batches(train, 4) + batches(dev, 4), "cpu")
    cache = FeatureCache.build(encoder, tagged, "cpu")
    dev_only = FeatureCache.build(encoder, batches(dev, 2), "cpu", split="dev")
    encoder.eval()
    with torch.no_grad():
        for examples, split in ((train, "train"), (dev, "dev")):
            batch = batches(examples, 3, seed=1)[0]
            out = encoder(batch["input_ids"], batch["attention_mask"])
            pooled = cache.features_for(batch, split=split)[1]
            torch.testing.assert_close(pooled, out.pooled, atol=1e-5, rtol=0)
            tagged_batch = {**batch, "split": split}
            torch.testing.assert_close(cache.features_for(tagged_batch)[1], pooled, atol=0, rtol=0)
        batch = batches(dev, 5)[0]
        alone = dev_only.features_for(batch, split="dev")[1]
        torch.testing.assert_close(alone, cache.features_for(batch, split="dev")[1], atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="'snips'/test"):
        cache.features_for(batches(dev, 5)[0], split="test")
