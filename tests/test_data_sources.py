"""Sources (JointBERT, CoNLL, tabular, hub) and every bad-input error they raise."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mtexp.data import DataError, load_data


def write_jointbert(root: Path, splits: dict[str, list[tuple[str, str, str]]]) -> Path:
    """(sentence, tags, intent) rows per split into JointBERT folders."""
    for split, rows in splits.items():
        folder = root / split
        folder.mkdir(parents=True)
        (folder / "seq.in").write_text("".join(f"{s}\n" for s, _, _ in rows), encoding="utf-8")
        (folder / "seq.out").write_text("".join(f"{t}\n" for _, t, _ in rows), encoding="utf-8")
        (folder / "label").write_text("".join(f"{i}\n" for _, _, i in rows), encoding="utf-8")
    return root


ROWS = [
    ("play some jazz ", "O O B-genre", "PlayMusic"),
    ("rain in paris", "O O B-city", "GetWeather"),
    ("play new york songs", "O B-city I-city O", "PlayMusic"),
    ("weather in new york", "O O B-city I-city", "GetWeather#Other"),
]


def jb(path: Path, **extra) -> dict:
    return {"sources": [{"source": "jointbert", "path": str(path)}], **extra}


def test_jointbert_reads_words_tags_and_multi_intents(tmp_path: Path) -> None:
    root = write_jointbert(tmp_path / "d", {"train": ROWS * 3, "dev": ROWS[:2], "test": ROWS})
    data = load_data(jb(root), seed=0)
    corpus = data.corpora[0]
    assert data.joint and corpus.tasks == ("intent", "slots")
    first = corpus.splits["train"][0]
    assert first.words == ["play", "some", "jazz"]  # trailing space ignored
    assert first.labels == {"intent": "PlayMusic", "slots": ["O", "O", "B-genre"]}
    intent = data.task("intent")
    assert intent.kind == "sequence"
    assert intent.labels == ("GetWeather", "GetWeather#Other", "PlayMusic")
    slots = data.task("slots")
    assert slots.labels == ("O", "B-city", "B-genre", "I-city", "I-genre")


def test_missing_path_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.sources\[0\]\.path: path not found"):
        load_data(jb(tmp_path / "nowhere"), seed=0)


def test_token_count_mismatch_names_file_and_line(tmp_path: Path) -> None:
    rows = [*ROWS, ("one two three", "O O", "PlayMusic")]
    root = write_jointbert(tmp_path / "d", {"train": rows})
    with pytest.raises(DataError, match=r"train/seq\.out:5: 2 tags, but .*seq\.in:5 has 3 words"):
        load_data(jb(root), seed=0)


def test_empty_split_file_is_an_error(tmp_path: Path) -> None:
    root = write_jointbert(tmp_path / "d", {"train": ROWS, "test": ROWS})
    (root / "test" / "seq.in").write_text("")
    with pytest.raises(DataError, match=r"test/seq\.in: file is empty"):
        load_data(jb(root), seed=0)


def test_line_count_mismatch_is_an_error(tmp_path: Path) -> None:
    root = write_jointbert(tmp_path / "d", {"train": ROWS})
    (root / "train" / "label").write_text("PlayMusic\n")
    with pytest.raises(DataError, match=r"train/label: 1 lines, but .*seq\.in has 4"):
        load_data(jb(root), seed=0)


def test_not_utf8_names_the_file(tmp_path: Path) -> None:
    root = write_jointbert(tmp_path / "d", {"train": ROWS})
    (root / "train" / "seq.in").write_bytes("play\nclásicos a b\n".encode("latin-1") * 2)
    with pytest.raises(DataError, match=r"train/seq\.in: not valid UTF-8 \(line 2"):
        load_data(jb(root), seed=0)


def test_malformed_bio_repaired_and_counted(tmp_path: Path) -> None:
    rows = [*ROWS, ("play new york", "O I-city I-city", "PlayMusic")]
    root = write_jointbert(tmp_path / "d", {"train": rows * 2})
    data = load_data(jb(root), seed=0)
    assert data.stats["corpora"]["d"]["bio_repaired"] == {"train": 2}
    tags = [ex.labels["slots"] for split in data.corpora[0].splits.values() for ex in split]
    assert ["O", "B-city", "I-city"] in tags
    assert not any(t[0].startswith("I-") for t in tags)


def test_malformed_bio_rejected_in_strict_mode(tmp_path: Path) -> None:
    rows = [*ROWS, ("play new york", "O I-city I-city", "PlayMusic")]
    root = write_jointbert(tmp_path / "d", {"train": rows})
    with pytest.raises(DataError, match=r"seq\.out:5: malformed BIO: 'I-city' at word 2"):
        load_data(jb(root, strict_bio=True), seed=0)


def test_tag_that_is_not_bio_is_an_error(tmp_path: Path) -> None:
    root = write_jointbert(tmp_path / "d", {"train": [*ROWS, ("a b", "O S-city", "PlayMusic")]})
    with pytest.raises(DataError, match=r"seq\.out:5: tag 'S-city' is not BIO"):
        load_data(jb(root), seed=0)


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

In IN B-PP O
Paris NNP B-NP I-LOC
Rome NNP B-NP B-LOC
"""


def test_conll_skips_docstart_and_converts_iob1(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(CONLL * 4, encoding="utf-8")
    src = {"source": "conll", "path": str(path), "token_task": "ner", "tag_column": 3}
    data = load_data({"sources": [src]}, seed=0)
    examples = [ex for split in data.corpora[0].splits.values() for ex in split]
    assert len(examples) == 12 and not any("-DOCSTART-" in ex.words for ex in examples)
    tags = {tuple(ex.words): ex.labels["ner"] for ex in examples}
    assert tags[("EU", "rejects", "German", "call")] == ["B-ORG", "O", "B-MISC", "O"]
    assert tags[("Peter", "Blackburn")] == ["B-PER", "I-PER"]
    assert tags[("In", "Paris", "Rome")] == ["O", "B-LOC", "B-LOC"]
    assert data.stats["corpora"]["train"]["iob1_converted"]["train"] > 0
    assert sorted(data.corpora[0].sizes().values()) == [1, 1, 10]  # dev and test carved


def test_conll_tag_column_choice(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(CONLL * 4, encoding="utf-8")
    src = {"source": "conll", "path": str(path), "token_task": "chunk", "tag_column": 2}
    data = load_data({"sources": [src]}, seed=0)
    assert "B-NP" in data.task("chunk").labels and "B-ORG" not in data.task("chunk").labels


def test_conll_missing_column_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("EU B-ORG\nrejects\n", encoding="utf-8")
    src = {"source": "conll", "path": str(path), "token_task": "ner", "tag_column": 1}
    with pytest.raises(DataError, match=r"train\.txt:2: no column 1 \(data\.sources\[0\]\.tag_column\)"):
        load_data({"sources": [src]}, seed=0)


def test_conll_strict_applies_to_iob2_files(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("Peter I-PER\nBlackburn I-PER\n\n" * 3, encoding="utf-8")
    src = {"source": "conll", "path": str(path), "token_task": "ner", "scheme": "iob2"}
    with pytest.raises(DataError, match=r"train\.txt:1: malformed BIO"):
        load_data({"sources": [src], "strict_bio": True}, seed=0)


def reviews(n: int = 40) -> pd.DataFrame:
    texts = [f"review number {i} was {'great' if i % 2 else 'bad'}" for i in range(n)]
    return pd.DataFrame({"text": texts, "stars": ["pos" if i % 2 else "neg" for i in range(n)]})


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_tabular_formats(tmp_path: Path, fmt: str) -> None:
    frame = reviews()
    path = tmp_path / f"reviews.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    src = {"source": "tabular", "path": str(path), "label_column": "stars",
           "sequence_task": "sentiment"}
    data = load_data({"sources": [src]}, seed=0)
    corpus = data.corpora[0]
    assert sum(corpus.sizes().values()) == 40
    assert data.task("sentiment").labels == ("neg", "pos")
    example = corpus.splits["train"][0]
    assert example.words[:2] == ["review", "number"]
    # carved dev/test are stratified: both labels, in equal numbers
    dev = [ex.labels["sentiment"] for ex in corpus.splits["dev"]]
    assert sorted(dev) == ["neg", "neg", "pos", "pos"]


def test_tabular_missing_column_names_column_and_file(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    reviews().to_csv(path, index=False)
    src = {"source": "tabular", "path": str(path), "label_column": "label",
           "sequence_task": "sentiment"}
    expected = r"reviews\.csv: no column 'label' \(from data\.sources\[0\]\.label_column\)"
    with pytest.raises(DataError, match=expected):
        load_data({"sources": [src]}, seed=0)


def test_tabular_not_utf8_and_empty(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes("text,label\ncafé,a\n".encode("cp1252"))
    src = {"source": "tabular", "path": str(bad), "sequence_task": "s"}
    with pytest.raises(DataError, match=r"bad\.csv: not valid UTF-8"):
        load_data({"sources": [src]}, seed=0)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        load_data({"sources": [{**src, "path": str(empty)}]}, seed=0)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(DataError, match=r"header\.csv: no rows"):
        load_data({"sources": [{**src, "path": str(header_only)}]}, seed=0)


def test_tabular_folder_with_split_files(tmp_path: Path) -> None:
    folder = tmp_path / "reviews"
    folder.mkdir()
    reviews(30).to_csv(folder / "train.csv", index=False)
    reviews(6).to_csv(folder / "valid.csv", index=False)
    reviews(8).to_csv(folder / "test.csv", index=False)
    src = {"source": "tabular", "path": str(folder), "label_column": "stars",
           "sequence_task": "sentiment"}
    data = load_data({"sources": [src]}, seed=0)
    assert data.corpora[0].sizes() == {"train": 30, "dev": 6, "test": 8}
    assert data.stats["corpora"]["reviews"]["carved"] == []


def test_hub_source_through_load_dataset_with_local_files(tmp_path: Path) -> None:
    rows = [{"tokens": ["Peter", "lives", "in", "New", "York"], "ner": ["B-PER", "O", "O", "B-LOC", "I-LOC"],
             "topic": "bio"}, {"tokens": ["Rome", "wins"], "ner": ["B-LOC", "O"], "topic": "sport"}]
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows * 3))
    src = {
        "source": "hub", "dataset": "json", "name": "local",
        "data_files": {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "validation", "test")},
        "text_column": "tokens", "tags_column": "ner", "label_column": "topic",
        "token_task": "ner", "sequence_task": "topic", "cache_dir": str(tmp_path / "hf"),
    }
    data = load_data({"sources": [src]}, seed=0)
    assert data.corpora[0].sizes() == {"train": 6, "dev": 6, "test": 6}
    first = data.corpora[0].splits["train"][0]
    assert first.words == rows[0]["tokens"] and first.labels["ner"] == rows[0]["ner"]
    assert data.task("topic").labels == ("bio", "sport")
    with pytest.raises(DataError, match=r"no column 'labels' \(from data\.sources\[0\]\.tags_column\)"):
        load_data({"sources": [{**src, "tags_column": "labels"}]}, seed=0)


def test_hub_class_label_ids_become_names(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features({
        "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["neg", "pos"]),
    })
    ds = datasets.Dataset.from_dict({"text": ["good film", "bad film"] * 5, "label": [1, 0] * 5},
                                    features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    from mtexp.data.bio import BioPolicy
    from mtexp.data.columns import ColumnMap
    from mtexp.data.hub import HubSource, _split_examples

    cmap = ColumnMap.from_source(HubSource(sequence_task="sentiment"), "k")
    examples = _split_examples(datasets.load_from_disk(str(tmp_path / "saved")), cmap, "x",
                               "train", BioPolicy(), "k")
    assert [ex.labels["sentiment"] for ex in examples[:2]] == ["pos", "neg"]


def test_unknown_source_key_is_an_error(tmp_path: Path) -> None:
    root = write_jointbert(tmp_path / "d", {"train": ROWS})
    with pytest.raises(DataError, match=r"data\.sources\[0\]: unknown key\(s\) \['tag_colum'\]"):
        load_data({"sources": [{"source": "jointbert", "path": str(root), "tag_colum": 1}]}, seed=0)


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ({"source": "jointbert"}, r"data\.sources\[0\]\.path: set the JointBERT folder"),
        ({"source": "conll", "token_task": "ner", "path": "missing.txt"},
         r"data\.sources\[0\]\.path: path not found: .*missing\.txt"),
        ({"source": "tabular", "sequence_task": "s", "files": {"train": "gone.csv"}},
         r"data\.sources\[0\]\.files\.train: path not found"),
        ({"source": "hub", "dataset": "json", "sequence_task": "s", "data_files": {"train": "x.jsonl"}},
         r"data\.sources\[0\]\.data_files\.train: path not found"),
    ],
)
def test_missing_paths_name_the_config_key(tmp_path: Path, monkeypatch, src: dict, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=message):
        load_data({"sources": [src]}, seed=0)
