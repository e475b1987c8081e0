from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from mtexp.drift import layer_cka, linear_cka, load_sts, sample_sentences, sts_spearman
from mtexp.encoder import SentenceEncoder

SENTENCES = [
    "play the latest album by radiohead",
    "book a table for two at an italian restaurant tonight",
    "what is the weather like in paris tomorrow",
    "add this song to my workout playlist",
    "turn off the lights in the kitchen",
    "find me a movie schedule for the nearest cinema",
    "rate this book five stars",
    "will it rain in berlin",
]


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA through the HSIC formula with linear kernels and the centring matrix H."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h)) / (n - 1) ** 2

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_linear_cka_identity_rotation_scaling() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x.double() @ rotation) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, 7.5 * x + 3.0) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, x[:, :8]) < 1.0


def test_linear_cka_unrelated_and_reference() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 12))
    y = rng.normal(size=(100, 20))
    unrelated = linear_cka(x, y)
    assert 0.0 < unrelated < 0.5
    assert unrelated == pytest.approx(hsic_cka(x, y), rel=1e-9)
    z = x @ rng.normal(size=(12, 6)) + 0.1 * rng.normal(size=(100, 6))
    assert linear_cka(x, z) == pytest.approx(hsic_cka(x, z), rel=1e-9)
    assert linear_cka(torch.tensor(x, dtype=torch.float32), z) == pytest.approx(
        hsic_cka(x, z), rel=1e-5
    )


def test_linear_cka_errors() -> None:
    with pytest.raises(ValueError, match="same rows"):
        linear_cka(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(torch.ones(5, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(torch.zeros(3), torch.zeros(3))


def test_sample_sentences_is_seeded_and_ordered() -> None:
    sentences = [f"s{i}" for i in range(100)]
    sample = sample_sentences(sentences, n=10, seed=3)
    assert sample == sample_sentences(sentences, n=10, seed=3)
    assert sample != sample_sentences(sentences, n=10, seed=4)
    assert len(set(sample)) == 10
    assert sample == sorted(sample, key=sentences.index)
    assert sample_sentences(sentences[:5], n=10) == sentences[:5]


def test_layer_cka_identical_copy(tiny_encoder: SentenceEncoder) -> None:
    result = layer_cka(tiny_encoder, copy.deepcopy(tiny_encoder), SENTENCES, batch_size=3)
    assert set(result) == {"layer_0", "layer_1", "layer_2", "mean"}
    for value in result.values():
        assert value == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("perturbed", [0, 1])
def test_layer_cka_drops_from_the_perturbed_layer(
    tiny_encoder: SentenceEncoder, perturbed: int
) -> None:
    after = copy.deepcopy(tiny_encoder)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for parameter in after.layers[perturbed].parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator))
    result = layer_cka(tiny_encoder, after, SENTENCES)
    for layer in range(tiny_encoder.num_layers + 1):
        value = result[f"layer_{layer}"]
        if layer <= perturbed:
            assert value == pytest.approx(1.0, abs=1e-9), layer
        else:
            assert value < 0.99, layer
    assert result["mean"] < 1.0


def test_layer_cka_batches_and_token_cap(tiny_encoder: SentenceEncoder) -> None:
    after = copy.deepcopy(tiny_encoder)
    with torch.no_grad():
        after.layers[1].output.dense.weight.mul_(-3.0)
    batches = [tiny_encoder.tokenize(SENTENCES[:4]), tiny_encoder.tokenize(SENTENCES[4:])]
    from_batches = layer_cka(tiny_encoder, after, batches)
    from_sentences = layer_cka(tiny_encoder, after, SENTENCES, batch_size=4)
    assert from_batches == pytest.approx(from_sentences, abs=1e-6)
    capped = layer_cka(tiny_encoder, after, SENTENCES, max_tokens=20, seed=1)
    assert capped == layer_cka(tiny_encoder, after, SENTENCES, max_tokens=20, seed=1)
    assert capped["layer_2"] != pytest.approx(from_sentences["layer_2"], abs=1e-9)
    assert tiny_encoder.training == after.training


def write_sts(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_load_sts_small_file(tmp_path: Path) -> None:
    rows = [
        "main-captions\tMSRvid\t2012test\t0001\t5.000\tA man plays.\tA man is playing.",
        'main-news\theadlines\t2015\t0002\t0.4\tHe said "no.\tShe left.\tlicense\tsource',
        "main-forums\tanswer-answer\t2016\t0003\t3\tYes\tNo",
    ]
    write_sts(tmp_path / "sts-dev.csv", rows)
    first, second, scores = load_sts(tmp_path, split="dev")
    assert first == ["A man plays.", 'He said "no.', "Yes"]
    assert second == ["A man is playing.", "She left.", "No"]
    np.testing.assert_allclose(scores, [5.0, 0.4, 3.0])
    assert load_sts(tmp_path / "sts-dev.csv")[0] == first


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("main-news\theadlines\t2015\t0002\t2.0\tonly one sentence", "at least 7"),
        ("main-news\theadlines\t2015\t0002\thigh\ta\tb", "'high' is not a number"),
        ("main-news\theadlines\t2015\t0002\t6.5\ta\tb", "outside"),
    ],
)
def test_load_sts_bad_row_names_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    good = "main-captions\tMSRvid\t2012test\t0001\t5.000\tA man plays.\tA man is playing."
    file = write_sts(tmp_path / "sts-test.csv", [good, row])
    with pytest.raises(ValueError, match=message) as error:
        load_sts(tmp_path)
    assert f"{file}:2:" in str(error.value)


def test_load_sts_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"sts-train\.csv"):
        load_sts(tmp_path, split="train")


def test_load_sts_real_test_split(shared_data: Path) -> None:
    first, second, scores = load_sts(shared_data / "stsb", split="test")
    assert len(first) == len(second) == len(scores) == 1379
    assert scores.min() >= 0.0 and scores.max() <= 5.0
    assert scores.mean() == pytest.approx(2.608, abs=1e-3)


class AngleEncoder:
    """An encoder whose embedding of a sentence is the unit vector at the angle (degrees) the
    sentence names, so that every pair's cosine is known."""

    def encode(self, sentences: list[str], **kwargs) -> np.ndarray:
        angles = np.radians([float(sentence) for sentence in sentences])
        return np.stack([np.cos(angles), np.sin(angles)], axis=1) * 3.0  # not unit: sts_spearman normalises


# (gold score, first, second): cosines 1, 0.5, 0, -0.5 against gold ranks 4, 2, 3, 1, so
# d = (0, 1, -1, 0) and Spearman = 1 - 6 * 2 / (4 * 15) = 0.8
ANGLE_PAIRS = [(5.0, "0", "0"), (1.0, "10", "70"), (3.0, "20", "110"), (0.0, "0", "120")]


def test_sts_spearman_of_a_constructed_case(tmp_path: Path) -> None:
    rows = [f"g\tf\ty\t{i}\t{score}\t{a}\t{b}" for i, (score, a, b) in enumerate(ANGLE_PAIRS)]
    write_sts(tmp_path / "sts-test.csv", rows)
    assert sts_spearman(AngleEncoder(), tmp_path) == pytest.approx(0.8, abs=1e-12)
    assert sts_spearman(AngleEncoder(), tmp_path, max_pairs=4) == pytest.approx(0.8, abs=1e-12)
    reversed_gold = [f"g\tf\ty\t{i}\t{5 - score}\t{a}\t{b}" for i, (score, a, b) in enumerate(ANGLE_PAIRS)]
    write_sts(tmp_path / "sts-dev.csv", reversed_gold)
    assert sts_spearman(AngleEncoder(), tmp_path, split="dev") == pytest.approx(-0.8, abs=1e-12)
    # a seeded sample of 3 of the 4 pairs: always the same one, and one of the four 3-subsets
    subsets = {round(spearman_of(ANGLE_PAIRS[:i] + ANGLE_PAIRS[i + 1:]), 12) for i in range(4)}
    sampled = {round(sts_spearman(AngleEncoder(), tmp_path, max_pairs=3, seed=seed), 12) for seed in range(6)}
    assert sampled <= subsets and len(sampled) > 1
    assert sts_spearman(AngleEncoder(), tmp_path, max_pairs=3, seed=1) == sts_spearman(
        AngleEncoder(), tmp_path, max_pairs=3, seed=1)


def spearman_of(pairs: list[tuple[float, str, str]]) -> float:
    """Spearman by hand (no ties): 1 - 6 sum(d^2) / (n (n^2 - 1)) of cosine ranks vs gold ranks."""
    cosines = [np.cos(np.radians(float(b) - float(a))) for _, a, b in pairs]
    gold = [score for score, _, _ in pairs]
    d = np.argsort(np.argsort(cosines)) - np.argsort(np.argsort(gold))
    n = len(pairs)
    return 1 - 6 * float((d**2).sum()) / (n * (n**2 - 1))


def test_sts_spearman_tiny_encoder_identical_sentences_rank_first(tmp_path: Path,
                                                                   tiny_encoder: SentenceEncoder) -> None:
    rows = [
        "g\tf\ty\t0\t5.0\ta cat sits on the mat\ta cat sits on the mat",
        "g\tf\ty\t1\t0.0\ta cat sits on the mat\tstock markets fell sharply",
    ]
    # identical sentences have cosine 1, the highest, and the highest gold score
    write_sts(tmp_path / "sts-dev.csv", rows)
    assert sts_spearman(tiny_encoder, tmp_path, split="dev") == pytest.approx(1.0)


# all-MiniLM-L6-v2's published STS-B test Spearman is about 0.82; a random encoder's is far lower
# (the tiny random BERT: 0.40 to 0.43 over seeds 0-2, from word overlap alone).
STSB_BAR = 0.75


@pytest.mark.slow
def test_sts_spearman_minilm_stsb_test(shared_data: Path) -> None:
    encoder = SentenceEncoder.from_pretrained()
    assert sts_spearman(encoder, shared_data / "stsb", split="test") > STSB_BAR


@pytest.mark.slow
def test_sts_spearman_random_encoder_stsb_test(shared_data: Path) -> None:
    value = sts_spearman(SentenceEncoder.random_init(seed=0), shared_data / "stsb", split="test")
    assert 0.0 < value < STSB_BAR
