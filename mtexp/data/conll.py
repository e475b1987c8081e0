"""CoNLL column files: `word ... tag` per line, a blank line between sentences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtexp.data.bio import BioPolicy
from mtexp.data.source import ReadContext
from mtexp.data.textio import FileSource, corpus_name, read_text, split_files
from mtexp.data.types import Corpus, DataError, Example

SUFFIXES = (".txt", ".conll", ".iob", ".bio", ".tsv", "")
DOCSTART = "-DOCSTART-"


@dataclass
class ConllSource(FileSource):
    """`source: conll`: `word ... tag` per line, a blank line between sentences."""

    token_task: str | None = None  # required: the task the tags feed (e.g. ner)
    word_column: int = 0
    tag_column: int = -1  # the last column; 3 picks CoNLL-2003's NER column explicitly
    separator: str | None = None  # null: any whitespace
    scheme: str = "iob1"  # iob1 files are converted to IOB2; iob2 files are checked


def read_conll(src: ConllSource, ctx: ReadContext) -> Corpus:
    """Read CoNLL files; the tag column is `tag_column` (default last), IOB1 becomes IOB2."""
    key, task = ctx.key, src.token_task
    if not task:
        raise DataError(f"{key}.token_task: name the token task (e.g. ner)")
    files = split_files(src, key, SUFFIXES)
    columns = (src.word_column, src.tag_column)
    splits = {
        split: _read_file(path, split, task, columns, src.separator, ctx.policy, key)
        for split, path in files.items()
    }
    return Corpus(name=corpus_name(src, files), tasks=(task,), splits=splits)


def _read_file(
    path: Path,
    split: str,
    task: str,
    columns: tuple[int, int],
    sep: str | None,
    policy: BioPolicy,
    key: str,
) -> list[Example]:
    examples: list[Example] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    for number, line in enumerate([*read_text(path).splitlines(), ""], start=1):
        if not line.strip():
            if words:
                where = f"{path}:{start}"
                labels = {task: policy.normalise(tags, where, split)}
                examples.append(Example(words=words, labels=labels))
            words, tags = [], []
            continue
        fields = line.split(sep) if sep else line.split()
        if fields[0] == DOCSTART:
            continue
        if not words:
            start = number
        words.append(_field(fields, columns[0], path, number, f"{key}.word_column"))
        tags.append(_field(fields, columns[1], path, number, f"{key}.tag_column"))
    if not examples:
        raise DataError(f"{path}: no sentences found; expected `word ... tag` lines")
    return examples


def _field(fields: list[str], column: int, path: Path, number: int, key: str) -> str:
    try:
        value = fields[column].strip()
    except IndexError:
        raise DataError(
            f"{path}:{number}: no column {column} ({key}); the line has {len(fields)} columns"
        ) from None
    if not value:
        raise DataError(f"{path}:{number}: column {column} ({key}) is empty")
    return value
