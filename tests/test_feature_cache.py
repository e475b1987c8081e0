"""Frozen-feature cache: heads trained on cached encoder outputs match the full path."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time

import pytest
import torch

from mtexp import feature_store
from mtexp.data import cache as cache_module
from mtexp.data.types import TaskSpec
from mtexp.encoder import SentenceEncoder
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


# ----- the on-disk store: frozen features shared by the runs of a sweep ---------------------


def test_a_stored_cache_loads_back_the_same(cache_and_model, tmp_path):
    cache, _ = cache_and_model
    meta = feature_store.save_cache(cache, tmp_path)
    loaded = feature_store.load_cache(tmp_path, json.loads(json.dumps(meta)), "cpu")
    for name in ("tokens", "pooled", "lengths", "offsets"):
        assert torch.equal(getattr(loaded, name), getattr(cache, name)), name
    assert loaded.keys() == cache.keys()


def small_cache(encoder, corpora, calls: list | None = None):
    def build():
        if calls is not None:
            calls.append(1)
        return FeatureCache.build(encoder, batches(corpora["snips"], 4), "cpu")

    return build


def test_the_store_builds_once_then_reads_and_rebuilds_a_damaged_entry(
    tiny_encoder, corpora, tmp_path, caplog
):
    root, calls = tmp_path / "frozen", []
    build = small_cache(copy.deepcopy(tiny_encoder), corpora, calls)
    first, status = feature_store.cached_features(root, "k", {"x": 1}, build, "cpu")
    assert status == "miss" and calls == [1]
    second, status = feature_store.cached_features(root, "k", {"x": 1}, build, "cpu")
    assert status == "hit" and calls == [1]
    assert torch.equal(second.tokens, first.tokens) and second.keys() == first.keys()
    tensors = root / "k" / feature_store.TENSORS_FILE
    data = bytearray(tensors.read_bytes())
    data[-5:] = bytes(255 - b for b in data[-5:])
    tensors.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="mtexp"):
        third, status = feature_store.cached_features(root, "k", {"x": 1}, build, "cpu")
    assert status == "rebuilt" and calls == [1, 1]
    assert any("damaged" in r.getMessage() and "checksum" in r.getMessage() for r in caplog.records)
    assert torch.equal(third.tokens, first.tokens)
    assert feature_store.cached_features(root, "k", {"x": 1}, build, "cpu")[1] == "hit"


def test_a_store_that_cannot_be_written_leaves_the_run_its_features(tiny_encoder, corpora, tmp_path,
                                                                   monkeypatch, caplog):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(feature_store, "save_file", disk_full)
    build = small_cache(copy.deepcopy(tiny_encoder), corpora)
    with caplog.at_level(logging.WARNING, logger="mtexp"):
        cache, status = feature_store.cached_features(tmp_path / "frozen", "k", {}, build, "cpu")
    assert status == "memory" and len(cache) == len(corpora["snips"])
    assert any("No space left" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "frozen" / "k").exists()


def test_a_process_wanting_an_entry_being_built_waits_and_reads_it(tiny_encoder, corpora, tmp_path):
    root, calls = tmp_path / "frozen", []
    building, statuses = threading.Event(), {}
    real_build = small_cache(copy.deepcopy(tiny_encoder), corpora, calls)

    def slow_build():
        building.set()
        time.sleep(0.5)  # the other writer arrives while this one holds the lock
        return real_build()

    def want(name: str, build) -> None:
        statuses[name] = feature_store.cached_features(root, "k", {}, build, "cpu")[1]

    first = threading.Thread(target=want, args=("first", slow_build))
    first.start()
    assert building.wait(60)
    want("second", real_build)
    first.join(60)
    assert statuses == {"first": "miss", "second": "hit"} and calls == [1]


def test_the_loser_of_a_race_without_the_lock_uses_the_winners_entry(tiny_encoder, corpora, tmp_path):
    """Where the lock is not honoured (some network file systems), the rename still decides."""
    root = tmp_path / "frozen"
    build = small_cache(copy.deepcopy(tiny_encoder), corpora)

    def build_while_another_commits():
        built = build()
        def save(folder):
            return {"winner": True, **feature_store.save_cache(built, folder)}

        cache_module.commit_entry(root, "k", save)
        return built

    feature_store.cached_features(root, "k", {}, build_while_another_commits, "cpu")
    assert json.loads((root / "k" / cache_module.META_FILE).read_text())["winner"] is True
    assert cache_module.verify_entry(root / "k")
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".lock-")) == ["k"]


def test_the_key_follows_weights_max_length_precision_and_pooling(tiny_encoder, tokenizer):
    from test_faults import make_data

    from mtexp.data.features import build_features

    def key(encoder, features, precision="fp32"):
        return feature_store.store_key(encoder, features, precision, 16, torch.device("cpu"))[0]

    features = build_features(make_data(), tokenizer, 24)
    encoder = copy.deepcopy(tiny_encoder)
    first = key(encoder, features)
    assert key(copy.deepcopy(encoder), build_features(make_data(), tokenizer, 24)) == first
    assert key(encoder, build_features(make_data(), tokenizer, 16)) != first
    assert key(encoder, features, "bf16") != first
    encoder.pooling = "cls"
    assert key(encoder, features) != first
    encoder.pooling = "mean"
    with torch.no_grad():
        encoder.layers[0].output.dense.bias.add_(1e-3)
    assert key(encoder, features) != first


# ----- end to end: the runs of a sweep share one entry ---------------------------------------


@pytest.fixture(scope="module")
def frozen_runs(tiny_encoder, tmp_path_factory) -> list[str]:
    """Overrides for a frozen-backbone run on a small JointBERT folder with a saved tiny backbone
    (its weights do not depend on the run's seed, as a pre-trained backbone's do not)."""
    root = tmp_path_factory.mktemp("frozen_runs")
    backbone = root / "backbone"
    tiny_encoder.backbone.save_pretrained(backbone)
    tiny_encoder.tokenizer.save_pretrained(backbone)
    sentences = [("play some jazz", "O O B-genre", "Play"), ("turn the lights on", "O O B-what O", "Lights"),
                 ("play the new album by adele now", "O O O O O B-artist O", "Play"),
                 ("dim the kitchen lights", "O O B-room O", "Lights")]
    for split, repeat in (("train", 12), ("dev", 3), ("test", 3)):
        folder = root / "data" / split
        folder.mkdir(parents=True)
        rows = [(f"{words} {n}", f"{tags} O", label)
                for n in range(repeat) for words, tags, label in sentences]
        for name, column in (("seq.in", 0), ("seq.out", 1), ("label", 2)):
            (folder / name).write_text("".join(f"{row[column]}\n" for row in rows), encoding="utf-8")
    return ["backbone=hub", f"backbone.name_or_path={backbone}", "backbone.max_length=32", "data=snips",
            f"data.path={root / 'data'}", f"paths.cache_root={root / 'cache'}", "freezing=backbone",
            "trainer=quick", "trainer.epochs=1", "eval.cka_sentences=0", "eval.train_subset=0"]


def frozen_run(overrides: list[str], run_dir, *extra: str) -> dict:
    from hydra import compose, initialize_config_dir

    from mtexp.train import CONF_DIR, run

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *extra])
    return run(cfg, run_dir)


def without_cache_timing(metrics: dict) -> dict:
    cost = {k: v for k, v in metrics["cost"].items()
            if k not in ("feature_cache", "train_seconds", "cache_seconds", "seconds_per_epoch",
                         "train_samples_per_second", "peak_memory_mb")}
    data = {k: v for k, v in metrics["data"].items() if k != "cache"}
    return {**metrics, "cost": cost, "data": data}


def test_the_runs_of_a_sweep_share_the_frozen_features(frozen_runs, tmp_path, monkeypatch):
    first = frozen_run(frozen_runs, tmp_path / "first")
    assert first["cost"]["feature_cache"] == "miss" and first["cost"]["cache_seconds"] > 0
    encoded = []

    def counting_forward(self, *args, **kwargs):
        encoded.append(1)
        return real_forward(self, *args, **kwargs)

    real_forward = SentenceEncoder.forward
    monkeypatch.setattr(SentenceEncoder, "forward", counting_forward)
    second = frozen_run(frozen_runs, tmp_path / "second")
    other_seed = frozen_run(frozen_runs, tmp_path / "other_seed", "seed=1")
    assert second["cost"]["feature_cache"] == other_seed["cost"]["feature_cache"] == "hit"
    assert encoded == []  # the encoder never ran: every feature came from the store
    assert without_cache_timing(second) == without_cache_timing(json.loads(json.dumps(first)))
    history = [(tmp_path / run / "history.csv").read_text().splitlines()[0] for run in ("first", "second")]
    assert history[0] == history[1]
    for changed in ("backbone.max_length=24", "trainer.precision=bf16"):
        name = changed.split("=")[0]
        assert frozen_run(frozen_runs, tmp_path / name, changed)["cost"]["feature_cache"] == "miss", changed
    assert len(encoded) > 0
