"""load_data: config handling, label vocabularies, unseen labels, carving and subsampling."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mtexp.data import SEQUENCE_FALLBACK, DataError, data_config, load_data
from mtexp.data.config import DEFAULTS

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


def write_jointbert(root: Path, splits: dict[str, list[tuple[str, str, str]]]) -> Path:
    for split, rows in splits.items():
        folder = root / split
        folder.mkdir(parents=True)
        for name, column in (("seq.in", 0), ("seq.out", 1), ("label", 2)):
            (folder / name).write_text("".join(f"{r[column]}\n" for r in rows), encoding="utf-8")
    return root


def labelled_rows(counts: dict[str, int]) -> list[tuple[str, str, str]]:
    """Rows with distinct sentences; `counts` intents -> how many."""
    rows = []
    for intent, n in counts.items():
        rows += [(f"{intent.lower()} sentence {i} now", "O O O B-when", intent) for i in range(n)]
    return rows


def cfg(root: Path, **extra) -> dict:
    return {"sources": [{"source": "jointbert", "path": str(root)}], **extra}


@pytest.fixture
def unseen_root(tmp_path: Path) -> Path:
    train = labelled_rows({"A": 10, "B": 10})
    test = [("a new thing", "O B-what I-what", "A"), ("c thing here", "B-when I-when O", "C")]
    return write_jointbert(tmp_path / "u", {"train": train, "dev": train[:4], "test": test})


def test_unseen_labels_are_an_error_naming_task_split_label(unseen_root: Path) -> None:
    with pytest.raises(DataError, match=r"task 'intent' .* split 'test'.*'C' \(1x\).*unseen_label=fallback"):
        load_data(cfg(unseen_root), seed=0)


def test_unseen_labels_fallback(unseen_root: Path) -> None:
    data = load_data(cfg(unseen_root, unseen_label="fallback"), seed=0)
    assert data.task("intent").labels == ("A", "B", SEQUENCE_FALLBACK)
    test = data.corpora[0].splits["test"]
    assert [ex.labels["intent"] for ex in test] == ["A", SEQUENCE_FALLBACK]
    # an unseen type's whole span becomes "O"; seen types stay
    assert test[0].labels["slots"] == ["O", "O", "O"]
    assert test[1].labels["slots"] == ["B-when", "I-when", "O"]
    assert data.stats["unseen_labels"] == {
        "intent": {"test": {"C": 1}}, "slots": {"test": {"B-what": 1, "I-what": 1}},
    }


def test_vocab_is_sorted_with_o_first_and_every_type_as_b_and_i(tmp_path: Path) -> None:
    rows = [("x y z", "B-zeta O B-alpha", "b"), ("p q", "B-alpha I-alpha", "a")] * 4
    data = load_data(cfg(write_jointbert(tmp_path / "v", {"train": rows})), seed=0)
    assert data.task("slots").labels == ("O", "B-alpha", "B-zeta", "I-alpha", "I-zeta")
    assert data.task("intent").labels == ("a", "b")
    assert data.labels() == {"intent": ["a", "b"], "slots": list(data.task("slots").labels)}


def test_dev_carved_seeded_stratified_and_keeps_rare_labels_in_train(tmp_path: Path) -> None:
    root = write_jointbert(tmp_path / "c", {"train": labelled_rows({"A": 60, "B": 30, "R": 1}),
                                            "test": labelled_rows({"A": 2})})
    data = load_data(cfg(root, dev_fraction=0.1), seed=3)
    corpus = data.corpora[0]
    assert Counter(ex.labels["intent"] for ex in corpus.splits["dev"]) == {"A": 6, "B": 3}
    assert "R" in {ex.labels["intent"] for ex in corpus.splits["train"]}
    assert data.stats["corpora"]["c"]["carved"] == ["dev"]
    again = load_data(cfg(root, dev_fraction=0.1), seed=3).corpora[0].splits["dev"]
    other = load_data(cfg(root, dev_fraction=0.1), seed=4).corpora[0].splits["dev"]
    assert [e.words for e in again] == [e.words for e in corpus.splits["dev"]]
    assert [e.words for e in other] != [e.words for e in corpus.splits["dev"]]


@pytest.fixture
def big_root(tmp_path: Path) -> Path:
    train = labelled_rows({"A": 100, "B": 50, "C": 20, "D": 10})
    return write_jointbert(tmp_path / "s", {"train": train, "dev": train[:5], "test": train[:5]})


def test_subsampling_is_stratified_and_seeded(big_root: Path) -> None:
    full = load_data(cfg(big_root), seed=0)
    small = load_data(cfg(big_root, train_fraction=0.2), seed=0)
    train = small.corpora[0].splits["train"]
    assert Counter(ex.labels["intent"] for ex in train) == {"A": 20, "B": 10, "C": 4, "D": 2}
    assert small.tasks == full.tasks  # the vocabulary does not depend on the fraction
    assert small.corpora[0].splits["dev"] == full.corpora[0].splits["dev"]
    same = load_data(cfg(big_root, train_fraction=0.2), seed=0).corpora[0].splits["train"]
    other = load_data(cfg(big_root, train_fraction=0.2), seed=1).corpora[0].splits["train"]
    assert [e.words for e in same] == [e.words for e in train]
    assert [e.words for e in other] != [e.words for e in train]
    stats = small.stats["corpora"]["s"]
    assert stats["train_before_subsample"] == 180 and stats["sizes"]["train"] == 36


def test_max_train_examples_caps_after_fraction(big_root: Path) -> None:
    data = load_data(cfg(big_root, train_fraction=0.5, max_train_examples=18), seed=0)
    train = data.corpora[0].splits["train"]
    assert Counter(ex.labels["intent"] for ex in train) == {"A": 10, "B": 5, "C": 2, "D": 1}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train_fraction", 0, r"data\.train_fraction: expected a number in \(0, 1\]"),
        ("dev_fraction", 1.0, r"data\.dev_fraction"),
        ("max_train_examples", -3, r"data\.max_train_examples"),
        ("unseen_label", "skip", r"data\.unseen_label"),
        ("sampling", {"strategy": "uniform"}, r"data\.sampling\.strategy"),
        ("sampling", {"temperature": 0}, r"data\.sampling\.temperature"),
        ("sources", [{"source": "ftp"}], r"data\.sources\[0\]\.source"),
        ("sources", [], r"data\.sources: expected a non-empty list"),
    ],
)
def test_bad_config_values_name_the_key(key: str, value: object, message: str) -> None:
    node = {"sources": [{"source": "jointbert", "path": "x"}], key: value}
    with pytest.raises(DataError, match=message):
        data_config(node)


def test_relative_paths_resolve_against_the_working_directory(
    big_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(big_root.parent)
    data = load_data({"path": "s", "sources": [{"source": "jointbert"}]}, seed=0)
    assert data.name == "s" and data.corpora[0].sizes()["train"] == 180


def test_accepts_a_root_config_and_omegaconf(big_root: Path) -> None:
    root = OmegaConf.create({"seed": 1, "data": {"name": "mine", "path": str(big_root),
                                                 "sources": [{"source": "jointbert"}]}})
    assert load_data(root, seed=0).name == "mine"


def test_task_names_must_differ_across_sources(big_root: Path) -> None:
    src = {"source": "jointbert", "path": str(big_root)}
    with pytest.raises(DataError, match="corpus names must differ"):
        load_data({"sources": [src, src]}, seed=0)
    with pytest.raises(DataError, match="each task must come from one source"):
        load_data({"sources": [src, {**src, "name": "other"}]}, seed=0)


@pytest.mark.parametrize("preset", ["snips", "atis", "disjoint_example"])
def test_presets_hold_every_data_key(preset: str) -> None:
    node = OmegaConf.to_container(OmegaConf.load(CONF / f"{preset}.yaml"))
    assert set(node) == set(DEFAULTS)
    assert set(node["sampling"]) == set(DEFAULTS["sampling"])


def test_presets_path_follows_mtexp_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTEXP_DATA", "/somewhere")
    node = OmegaConf.load(CONF / "atis.yaml")
    assert data_config(node)["path"] == "/somewhere/atis"
    assert data_config(node)["unseen_label"] == "fallback"


def test_builtin_preset_through_load_data() -> None:
    cfg = OmegaConf.load(CONF / "builtin.yaml")
    cfg.size = 400
    data = load_data(cfg, seed=0)
    assert data.joint and [(t.name, t.kind) for t in data.tasks] == [
        ("intent", "sequence"), ("slots", "token")]
    assert all(data.corpora[0].sizes()[s] > 0 for s in ("train", "dev", "test"))
    assert data.task("slots").labels[0] == "O"


def test_builtin_too_small_is_a_data_error() -> None:
    cfg = OmegaConf.load(CONF / "builtin.yaml")
    cfg.size = 20
    cfg.min_examples_per_intent = 1000
    with pytest.raises(DataError, match="empty"):
        load_data(cfg, seed=0)


@pytest.mark.parametrize("preset", ["snips", "atis"])
def test_hydra_overrides_reach_the_data_node(preset: str, big_root: Path) -> None:
    from hydra import compose, initialize_config_dir

    overrides = [f"data={preset}", f"data.path={big_root}", "data.train_fraction=0.5",
                 "data.sampling.strategy=round_robin", "data.unseen_label=error"]
    with initialize_config_dir(config_dir=str(CONF.parent), version_base=None):
        cfg = compose("config", overrides=overrides)
    data = load_data(cfg.data, seed=0)
    assert data.name == preset and data.corpora[0].sizes()["train"] == 90
    assert data_config(cfg.data)["sampling"]["strategy"] == "round_robin"
