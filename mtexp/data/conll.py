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

    def task_names(self) -> tuple[str, ...] | None:
        return (self.token_task,) if self.token_task else None


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
    where: list[str] = []  # file:line of each word, for messages about its tag
    for number, line in enumerate([*read_text(path).splitlines(), ""], start=1):
        if not line.strip():
            if words:
                labels = {task: policy.normalise(tags, where[0], split, word_where=where)}
                examples.append(Example(words=words, labels=labels))
            words, tags, where = [], [], []
            continue
        fields = line.split(sep) if sep else line.split()
        if fields[0] == DOCSTART:
            continue
        word, tag = _word_and_tag(fields, line, columns, f"{path}:{number}", key)
        words.append(word)
        tags.append(tag)
        where.append(f"{path}:{number}")
    if not examples:
        raise DataError(f"{path}: no sentences found; expected `word ... tag` lines")
    return examples


def _word_and_tag(
    fields: list[str], line: str, columns: tuple[int, int], where: str, key: str
) -> tuple[str, str]:
    """The word and the tag of a line; a line too short for both names the column it lacks."""
    word_column, tag_column = columns
    needed = columns_needed(word_column, tag_column)
    if len(fields) < needed:
        word_fits = -len(fields) <= word_column < len(fields)
        name, column = ("tag_column", tag_column) if word_fits else ("word_column", word_column)
        shown = line.strip() if len(line.strip()) <= 60 else line.strip()[:57] + "..."
        raise DataError(
            f"{where}: no column {column} ({key}.{name}); the line has {len(fields)} column(s), "
            f"expected at least {needed} (`word ... tag` with word_column {word_column} and "
            f"tag_column {tag_column}): {shown!r}"
        )
    return (
        _value(fields, word_column, where, f"{key}.word_column"),
        _value(fields, tag_column, where, f"{key}.tag_column"),
    )


def columns_needed(word_column: int, tag_column: int) -> int:
    """How many columns a line needs for its word and its tag to be two different columns
    (negative columns count from the end: word 0 and tag -1 need 2)."""
    if (word_column >= 0) == (tag_column >= 0):
        return max(word_column, tag_column) + 1 if word_column >= 0 else -min(word_column, tag_column)
    from_start, from_end = max(word_column, tag_column), min(word_column, tag_column)
    return from_start + 1 - from_end


def _value(fields: list[str], column: int, where: str, key: str) -> str:
    value = fields[column].strip()
    if not value:
        raise DataError(f"{where}: column {column} ({key}) is empty; expected a word or a tag")
    return value
