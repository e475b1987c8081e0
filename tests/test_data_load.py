"""load_data: config handling, label vocabularies, unseen labels, carving and subsampling."""

from __future__ import annotations

from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mtexp.data import SEQUENCE_FALLBACK, DataConfig, DataError, data_config, load_data, load_preset
from mtexp.data.builtin import BuiltinSource
from mtexp.data.config import DATA_KEYS, SamplingConfig
from mtexp.data.jointbert import JointBertSource

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


def preset_names() -> list[str]:
    """The selectable presets: conf/data/*.yaml; a leading underscore marks a shared base."""
    return sorted(p.stem for p in CONF.glob("*.yaml") if not p.stem.startswith("_"))


def test_the_selectable_presets() -> None:
    assert preset_names() == ["atis", "builtin", "disjoint_example", "snips"]


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_composes_with_every_key_and_converts(preset: str) -> None:
    node = load_preset(preset)
    keys = set(DATA_KEYS)
    if preset == "builtin":  # the flat form: the source's keys beside the data keys
        keys = (keys - {"path", "sources"}) | {"source"} | {f.name for f in fields(BuiltinSource)}
    assert set(node) == keys  # so that any key can be overridden without `+`
    assert set(node["sampling"]) == {f.name for f in fields(SamplingConfig)}
    assert "${" not in str(node)
    assert isinstance(data_config(node), DataConfig)


def test_presets_set_only_what_differs_from_the_defaults() -> None:
    snips = OmegaConf.load(CONF / "snips.yaml")
    assert set(snips) == {"defaults", "name", "path"}
    atis = OmegaConf.load(CONF / "atis.yaml")
    assert set(atis) == {"defaults", "name", "path", "unseen_label"}
    assert snips.defaults == atis.defaults == ["_jointbert", "_self_"]


def test_presets_path_follows_mtexp_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTEXP_DATA", "/somewhere")
    conf = data_config(load_preset("atis"))
    assert conf.path == conf.sources[0].path == "/somewhere/atis"
    assert conf.unseen_label == "fallback"
    assert data_config(load_preset("snips", "paths.data_root=/elsewhere")).path == "/elsewhere/snips"


def test_presets_cache_under_mtexp_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTEXP_CACHE", "/cache")
    for preset in preset_names():
        assert load_preset(preset).cache_dir == "/cache/features"


def test_presets_cache_off_with_null_cache_root() -> None:
    for preset in preset_names():
        assert load_preset(preset, "paths.cache_root=null").cache_dir is None
        assert load_preset(preset, "paths.cache_root=/c/").cache_dir == "/c/features"


def test_flat_and_list_forms_convert_alike(big_root: Path) -> None:
    flat = {"source": "jointbert", "path": str(big_root), "token_task": "tags", "train_fraction": 0.5}
    listed = {"path": str(big_root), "train_fraction": 0.5,
              "sources": [{"source": "jointbert", "path": str(big_root), "token_task": "tags"}]}
    assert data_config(flat) == data_config(listed)
    assert data_config(flat).sources == [JointBertSource(path=str(big_root), token_task="tags")]
    builtin = data_config({"source": "builtin", "size": 50, "dev_fraction": 0.2})
    assert builtin.dev_fraction == builtin.sources[0].dev_fraction == 0.2
    assert builtin.sources[0].size == 50 and builtin.path is None


def test_data_path_is_the_default_path_of_sources_without_one(big_root: Path) -> None:
    conf = data_config({"path": "/d", "sources": [{"source": "jointbert"},
                                                  {"source": "jointbert", "path": "/own", "name": "o"},
                                                  {"source": "conll", "files": {"train": "t.txt"}}]})
    assert [getattr(src, "path", None) for src in conf.sources] == ["/d", "/own", None]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"source": "builtin", "sise": 10}, r"data\.sise: unknown key"),
        ({"source": "builtin", "size": "many"}, r"data\.size: expected int, got 'many'"),
        ({"source": "ftp"}, r"data\.source: expected one of \('jointbert'"),
        ({"sources": [{"source": "jointbert", "path": 3}]}, r"data\.sources\[0\]\.path: expected str"),
        ({"sources": [{"source": "conll", "tag_column": "last"}]}, r"data\.sources\[0\]\.tag_column"),
        ({"sources": [{"source": "builtin", "size": 0}]}, r"data\.sources\[0\]\.size: expected a positive"),
        ({"sources": [{"source": "builtin", "path": "x"}]}, r"data\.sources\[0\]: unknown key\(s\) \['path'"),
        ({"sources": ["jointbert"]}, r"data\.sources\[0\]\.source: expected one of"),
        ({"sources": [{"source": "hub"}], "sampling": {"strategy": "x"}}, r"data\.sampling\.strategy"),
        ({"sources": [{"source": "hub"}], "sampling": {"temprature": 1}}, r"data\.sampling\.temprature"),
        ({"sources": [{"source": "hub"}], "strict_bio": "yes"}, r"data\.strict_bio: expected bool"),
    ],
)
def test_bad_keys_and_types_name_the_key(node: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        data_config(node)


def test_a_data_config_is_not_converted_again(big_root: Path) -> None:
    conf = data_config({"path": str(big_root), "sources": [{"source": "jointbert"}]})
    assert data_config(conf) is conf
    assert load_data(conf, seed=0).corpora[0].sizes()["train"] == 180


def test_builtin_preset_through_load_data() -> None:
    cfg = load_preset("builtin")
    cfg.size = 400
    data = load_data(cfg, seed=0)
    assert data.joint and [(t.name, t.kind) for t in data.tasks] == [
        ("intent", "sequence"), ("slots", "token")]
    assert all(data.corpora[0].sizes()[s] > 0 for s in ("train", "dev", "test"))
    assert data.task("slots").labels[0] == "O"


def test_builtin_too_small_is_a_data_error() -> None:
    cfg = load_preset("builtin")
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
    assert data_config(cfg.data).sampling.strategy == "round_robin"
