"""Task 1: the sentence encoder's pooling, batching and agreement with sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_module

from mtexp import precision as precision_module
from mtexp.backbones import BundledModelError, bundled_model_path, verify_model_folder
from mtexp.encoder import SentenceEncoder
from mtexp.pooling import POOLING_MODES, pool
from mtexp.precision import resolve_precision

SHORT = "turn on the kitchen lights"
LONG = " ".join([SHORT, "and then play some relaxing jazz music in the living room please"] * 2)


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoder:
    return SentenceEncoder.from_pretrained()


def snips_sentences(shared_data, limit: int) -> list[str]:
    lines = (shared_data / "snips" / "test" / "seq.in").read_text(encoding="utf-8").splitlines()
    return [" ".join(line.split()) for line in lines[:limit]]


def test_matches_sentence_transformers_on_real_sentences(minilm, shared_data):
    sentence_transformers = require_module("sentence_transformers")
    sentences = snips_sentences(shared_data, 256)
    reference = sentence_transformers.SentenceTransformer(str(bundled_model_path()), device="cpu")
    expected = reference.encode(sentences, batch_size=32, normalize_embeddings=True)
    ours = minilm.encode(sentences, batch_size=32, normalize=True, precision="fp32")
    assert ours.shape == expected.shape == (256, 384)
    assert np.abs(ours - expected).max() <= 1e-5


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_embedding_does_not_depend_on_batch_mates(minilm, mode):
    assert len(minilm.tokenizer(LONG)["input_ids"]) >= 3 * len(minilm.tokenizer(SHORT)["input_ids"])
    minilm.pooling = mode
    try:
        alone = minilm.encode([SHORT], precision="fp32")[0]
        batched = minilm.encode([LONG, SHORT], batch_size=2, precision="fp32")[1]
    finally:
        minilm.pooling = "mean"
    assert np.abs(alone - batched).max() <= 1e-5


def unmasked_mean(token_states: torch.Tensor) -> torch.Tensor:
    return token_states.mean(dim=1)


def test_unmasked_mean_would_fail_the_invariance_check(minilm):
    """The notebook's pooling averaged padding too; show that our check catches it."""
    batch = minilm.tokenize([LONG, SHORT])
    alone = minilm.tokenize([SHORT])
    with torch.inference_mode():
        padded = unmasked_mean(minilm(**batch).token_states)[1]
        single = unmasked_mean(minilm(**alone).token_states)[0]
    cosine = torch.nn.functional.cosine_similarity(padded, single, dim=0)
    assert cosine < 0.99


def test_cls_and_max_pooling_by_hand():
    states = torch.tensor(
        [
            [[1.0, -2.0], [3.0, 5.0], [100.0, 100.0]],
            [[-1.0, 0.5], [-4.0, 2.0], [2.0, -3.0]],
        ]
    )
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(states, mask, "cls"), torch.tensor([[1.0, -2.0], [-1.0, 0.5]]))
    assert torch.equal(pool(states, mask, "max"), torch.tensor([[3.0, 5.0], [2.0, 2.0]]))
    assert torch.allclose(pool(states, mask, "mean"), torch.tensor([[2.0, 1.5], [-1.0, -0.1666667]]))


def test_mean_pooling_of_an_all_padding_row_is_zero_not_nan():
    states = torch.ones(1, 3, 2)
    assert torch.equal(pool(states, torch.zeros(1, 3), "mean"), torch.zeros(1, 2))


def test_unknown_pooling_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown pooling mode 'sum'"):
        pool(torch.ones(1, 2, 2), torch.ones(1, 2), "sum")


def test_encode_keeps_input_order_and_shape(tiny_encoder):
    sentences = ["a", "a much longer sentence than the first one", "mid length one"]
    together = tiny_encoder.encode(sentences, batch_size=2, precision="fp32")
    one_by_one = np.stack([tiny_encoder.encode([s], precision="fp32")[0] for s in sentences])
    assert together.shape == (3, tiny_encoder.hidden_size)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    as_tensor = tiny_encoder.encode(sentences, convert_to="torch", normalize=True)
    assert torch.allclose(as_tensor.norm(dim=1), torch.ones(3), atol=1e-5)


def test_encode_rejects_a_bare_string(tiny_encoder):
    with pytest.raises(TypeError, match="list of sentences"):
        tiny_encoder.encode("just one")


def test_forward_returns_token_states_pooled_and_layers(tiny_encoder):
    batch = tiny_encoder.tokenize(["hello there", "general kenobi you are a bold one"])
    out = tiny_encoder(**batch, output_hidden_states=True)
    batch_size, length = batch["input_ids"].shape
    assert out.token_states.shape == (batch_size, length, tiny_encoder.hidden_size)
    assert out.pooled.shape == (batch_size, tiny_encoder.hidden_size)
    assert len(out.hidden_states) == tiny_encoder.num_layers + 1
    assert len(tiny_encoder.layers) == tiny_encoder.num_layers == 2


def test_random_init_is_seeded():
    first = SentenceEncoder.random_init(seed=3)
    second = SentenceEncoder.random_init(seed=3)
    other = SentenceEncoder.random_init(seed=4)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    query = "layer.0.attention.self.query.weight"
    assert not torch.equal(first.get_parameter(f"backbone.encoder.{query}"),
                           other.get_parameter(f"backbone.encoder.{query}"))


def test_bundled_model_has_the_published_checksum():
    folder = bundled_model_path()
    assert (folder / "model.safetensors").is_file()
    assert SentenceEncoder.from_pretrained().backbone.config.num_hidden_layers == 6


def test_corrupt_bundled_model_is_a_clear_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not the real weights")
    with pytest.raises(BundledModelError, match=r"corrupt: sha256 of .*model\.safetensors"):
        verify_model_folder(tmp_path)


def test_missing_bundled_weights_is_a_clear_error(tmp_path):
    with pytest.raises(BundledModelError, match="has no weights"):
        verify_model_folder(tmp_path)


def test_bf16_encoding_stays_close_to_fp32(minilm):
    sentences = [SHORT, LONG, "what is the weather like in paris tomorrow"]
    full = minilm.encode(sentences, normalize=True, precision="fp32")
    half = minilm.encode(sentences, normalize=True, precision="bf16")
    assert half.dtype == full.dtype
    assert (full * half).sum(axis=1).min() >= 0.999
    with pytest.raises(ValueError, match="precision"):
        minilm.encode(sentences, precision="fp16")


# ----- precision="auto": bf16 where the hardware runs it natively, within a stated tolerance --
BF16_MIN_COSINE = 0.9999  # README, Task 1


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16", "amx_tile"}, "bf16"),
    ({"fp", "asimd", "bf16"}, "bf16"), ({"avx2", "avx512f"}, "fp32"), (set(), "fp32"),
])
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, flags, expected):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset(flags))
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\n",
                       encoding="utf-8")
    monkeypatch.setattr(precision_module, "CPUINFO", cpuinfo)
    precision_module.cpu_flags.cache_clear()
    try:
        assert {"avx512_bf16", "fpu"} <= precision_module.cpu_flags()
    finally:
        precision_module.cpu_flags.cache_clear()


def test_encode_defaults_to_auto(tiny_encoder, monkeypatch):
    chosen = []
    real_autocast = torch.autocast

    def spy(device_type, dtype=None, enabled=True, **kwargs):
        chosen.append(enabled)
        return real_autocast(device_type, dtype=dtype, enabled=enabled, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    for flags, bf16 in (({"avx512_bf16"}, True), (set(), False)):
        monkeypatch.setattr(precision_module, "cpu_flags", lambda flags=flags: frozenset(flags))
        tiny_encoder.encode(["turn on the lights"])
        assert chosen[-1] is bf16


def test_bf16_embeddings_of_the_tiny_backbone_stay_within_the_tolerance(tiny_encoder):
    sentences = [SHORT, LONG, "what is the weather like in paris tomorrow", "a", "play some jazz"] * 4
    full = tiny_encoder.encode(sentences, precision="fp32")
    half = tiny_encoder.encode(sentences, precision="bf16")
    auto = tiny_encoder.encode(sentences)  # bf16 or fp32, whichever this machine picks
    assert min_cosine(full, half) >= BF16_MIN_COSINE
    assert min_cosine(full, auto) >= BF16_MIN_COSINE


def test_bf16_embeddings_of_minilm_on_snips_stay_within_the_tolerance(minilm, shared_data):
    sentences = snips_sentences(shared_data, 300)
    full = minilm.encode(sentences, precision="fp32")
    half = minilm.encode(sentences, precision="bf16")
    assert min_cosine(full, half) >= BF16_MIN_COSINE
