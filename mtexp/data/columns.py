"""Column mapping shared by the tabular and hub sources: rows of a table -> examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mtexp.data.bio import BioPolicy
from mtexp.data.source import SourceConfig
from mtexp.data.types import DataError, Example


@dataclass
class ColumnSource(SourceConfig):
    """A source read as a table: which columns feed which task."""

    text_column: str = "text"  # a string (split on whitespace) or a list of words
    label_column: str | None = "label"  # the sequence task's label (read with sequence_task)
    tags_column: str | None = "tags"  # word-level tags (read with token_task)
    sequence_task: str | None = None
    token_task: str | None = None

    def task_names(self) -> tuple[str, ...] | None:
        return tuple(task for task in (self.sequence_task, self.token_task) if task) or None


@dataclass(frozen=True)
class ColumnMap:
    """Which columns feed which task: text (str or word list), a label, word-level tags."""

    text: str
    label: str | None
    tags: str | None
    sequence_task: str | None
    token_task: str | None

    @classmethod
    def from_source(cls, src: ColumnSource, key: str) -> ColumnMap:
        cmap = cls(
            text=src.text_column,
            label=src.label_column if src.sequence_task else None,
            tags=src.tags_column if src.token_task else None,
            sequence_task=src.sequence_task,
            token_task=src.token_task,
        )
        if not cmap.sequence_task and not cmap.token_task:
            raise DataError(f"{key}: set sequence_task (with label_column) and/or token_task")
        return cmap

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in (self.sequence_task, self.token_task) if t)

    def required(self) -> list[tuple[str, str]]:
        """(column, config key) pairs the table must have."""
        pairs = [(self.text, "text_column")]
        if self.label:
            pairs.append((self.label, "label_column"))
        if self.tags:
            pairs.append((self.tags, "tags_column"))
        return pairs


def check_columns(present: Sequence[str], cmap: ColumnMap, where: str, key: str) -> None:
    for column, option in cmap.required():
        if column not in present:
            raise DataError(
                f"{where}: no column {column!r} (from {key}.{option}); "
                f"the columns are {list(present)}"
            )


def to_examples(
    table: Mapping[str, Sequence],
    cmap: ColumnMap,
    where: str,
    split: str,
    policy: BioPolicy,
    names: Mapping[str, Sequence[str]] | None = None,
) -> list[Example]:
    """Build examples; `names` maps a column of class ids to its label names (hub ClassLabel)."""
    names = names or {}
    texts = table[cmap.text]
    if len(texts) == 0:
        raise DataError(f"{where}: no rows; expected at least one example")
    examples = []
    for i, text in enumerate(texts):
        row = f"{where} row {i + 1}"
        words = _words(text, row, cmap.text)
        labels: dict[str, str | list[str]] = {}
        if cmap.label:
            labels[cmap.sequence_task] = _label(table[cmap.label][i], names.get(cmap.label), row)
        if cmap.tags:
            tags = _tags(table[cmap.tags][i], names.get(cmap.tags), row)
            if len(tags) != len(words):
                raise DataError(f"{row}: {len(tags)} tags for {len(words)} words")
            labels[cmap.token_task] = policy.normalise(tags, row, split)
        examples.append(Example(words=words, labels=labels))
    return examples


def _words(text: object, row: str, column: str) -> list[str]:
    if isinstance(text, str):
        words = text.split()
    elif isinstance(text, Sequence) or hasattr(text, "tolist"):
        words = [str(w) for w in list(text)]
    else:
        words = []
    if not words:
        raise DataError(f"{row}: column {column!r} is empty or missing; expected text")
    return words


def _label(value: object, names: Sequence[str] | None, row: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        raise DataError(f"{row}: missing label")
    if names is not None and not isinstance(value, str):
        return _class_name(names, value, row)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    label = str(value).strip()
    if not label:
        raise DataError(f"{row}: empty label")
    return label


def _tags(value: object, names: Sequence[str] | None, row: str) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if value is None:
        raise DataError(f"{row}: missing tags")
    items = list(value)
    if names is not None:
        return [t if isinstance(t, str) else _class_name(names, t, row) for t in items]
    return [str(t) for t in items]


def _class_name(names: Sequence[str], value: object, row: str) -> str:
    index = int(value)
    if not 0 <= index < len(names):
        raise DataError(f"{row}: class id {index} has no name (unlabelled split?); names: {names}")
    return names[index]
