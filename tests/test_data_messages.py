"""What a user is told about their data: CoNLL errors name the file, the line and what was
expected; BIO repairs and unseen-label fallbacks are logged, one line per kind."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from mtexp.data import DataError, load_data
from mtexp.data.conll import columns_needed

GOOD = "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\nPeter B-PER\nBlackburn I-PER\n\n"


def conll(tmp_path: Path, text: str, **extra) -> dict:
    path = tmp_path / "train.txt"
    path.write_text(text, encoding="utf-8")
    return {"sources": [{"source": "conll", "path": str(path), "token_task": "ner", **extra}]}


def error_of(config: dict) -> str:
    with pytest.raises(DataError) as error:
        load_data(config, seed=0)
    return str(error.value)


def test_a_tag_that_is_not_bio_names_its_own_line(tmp_path: Path) -> None:
    text = GOOD * 2 + "In O\nParis X-LOC\n\n"  # the bad tag is on line 18, its sentence starts on 17
    message = error_of(conll(tmp_path, text))
    assert message == (f"{tmp_path / 'train.txt'}:18: tag 'X-LOC' is not BIO; "
                       "expected 'O', 'B-<type>' or 'I-<type>'")


def test_strict_bio_names_the_line_of_the_tag_that_starts_a_span_with_i(tmp_path: Path) -> None:
    text = GOOD + "Peter B-PER\nsaid O\nBlackburn I-PER\n\n"
    message = error_of({**conll(tmp_path, text, scheme="iob2"), "strict_bio": True})
    assert message.startswith(f"{tmp_path / 'train.txt'}:11: malformed BIO: 'I-PER' at word 3")


def test_a_one_column_line_is_a_missing_column_not_a_bad_tag(tmp_path: Path) -> None:
    message = error_of(conll(tmp_path, GOOD + "Paris B-LOC\nrejects\n\n"))
    assert message == (
        f"{tmp_path / 'train.txt'}:10: no column -1 (data.sources[0].tag_column); the line has 1 "
        "column(s), expected at least 2 (`word ... tag` with word_column 0 and tag_column -1): 'rejects'"
    )


def test_a_missing_word_column_is_named(tmp_path: Path) -> None:
    message = error_of(conll(tmp_path, "B-ORG x EU\nO rejects\n", word_column=2, tag_column=0))
    assert re.match(r".*train\.txt:2: no column 2 \(data\.sources\[0\]\.word_column\); the line has 2 ",
                    message)


@pytest.mark.parametrize(("word", "tag", "needed"), [(0, -1, 2), (0, 3, 4), (1, -2, 4), (-1, 0, 2),
                                                     (-2, -1, 2), (3, 0, 4)])
def test_columns_needed(word: int, tag: int, needed: int) -> None:
    def two_columns(n: int) -> bool:  # both exist in a line of n columns, and differ
        return -n <= word < n and -n <= tag < n and word % n != tag % n

    assert columns_needed(word, tag) == needed
    assert two_columns(needed) and not two_columns(needed - 1)


def write_jointbert(root: Path, splits: dict[str, list[tuple[str, str, str]]]) -> Path:
    for split, rows in splits.items():
        folder = root / split
        folder.mkdir(parents=True)
        for name, column in (("seq.in", 0), ("seq.out", 1), ("label", 2)):
            (folder / name).write_text("".join(f"{r[column]}\n" for r in rows), encoding="utf-8")
    return root


ROWS = [(f"play song {i} now", "O O O B-when", "Play" if i % 2 else "Stop") for i in range(10)]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_bio_repairs_are_logged_once_per_source_with_counts_per_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = [("play new york", "O I-city I-city", "Play")] * 3
    root = write_jointbert(tmp_path / "d", {"train": ROWS + broken, "dev": ROWS[:4] + broken[:1],
                                            "test": ROWS[:4]})
    with caplog.at_level(logging.WARNING, logger="mtexp"):
        load_data({"sources": [{"source": "jointbert", "path": str(root)}]}, seed=0)
    assert warnings(caplog) == [
        "data.sources[0] (corpus 'd'): 4 malformed BIO tag(s) repaired to IOB2 (an I- tag that starts "
        "a span made B-): train 3, dev 1; set data.strict_bio=true to reject such files instead"
    ]


def test_unseen_label_fallbacks_are_logged_once_per_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    test = [("a new thing", "O B-what I-what", "Play"), ("c thing here", "B-when I-when O", "Skip"),
            ("c thing there", "O O O", "Skip")]
    root = write_jointbert(tmp_path / "u", {"train": ROWS, "dev": ROWS[:4], "test": test})
    config = {"sources": [{"source": "jointbert", "path": str(root)}], "unseen_label": "fallback"}
    with caplog.at_level(logging.WARNING, logger="mtexp"):
        load_data(config, seed=0)
    assert warnings(caplog) == [
        "task 'intent' (corpus 'u'): 2 dev/test label(s) not seen in train mapped to 'UNK' "
        "(data.unseen_label=fallback): test: 'Skip' (2x)",
        "task 'slots' (corpus 'u'): 2 dev/test label(s) not seen in train mapped to 'O' "
        "(data.unseen_label=fallback): test: 'B-what' (1x), 'I-what' (1x)",
    ]


def test_clean_data_logs_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_jointbert(tmp_path / "d", {"train": ROWS, "dev": ROWS[:4], "test": ROWS[:4]})
    with caplog.at_level(logging.WARNING, logger="mtexp"):
        load_data({"sources": [{"source": "jointbert", "path": str(root)}]}, seed=0)
    assert warnings(caplog) == []
