"""The task model of the data: task specs, examples, corpora and the multi-task bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TaskKind = Literal["sequence", "token"]
SPLITS: tuple[str, ...] = ("train", "dev", "test")


class DataError(ValueError):
    """Bad input data or data config; the message names the file, line or config key at fault."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: `sequence` (one label per sentence) or `token` (one IOB2 tag per word)."""

    name: str
    kind: TaskKind
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in ("sequence", "token"):
            raise DataError(f"task {self.name!r}: kind must be 'sequence' or 'token', got {self.kind!r}")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def label_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}


@dataclass
class Example:
    """A sentence as words, with a label per task: str (sequence) or list[str] aligned with words."""

    words: list[str]
    labels: dict[str, str | list[str]]


@dataclass
class Corpus:
    """Examples that share sentences across `tasks`, by split ("train", "dev", "test")."""

    name: str
    tasks: tuple[str, ...]
    splits: dict[str, list[Example]]
    stats: dict[str, Any] = field(default_factory=dict)  # how the reader made it (metrics.json)

    def sizes(self) -> dict[str, int]:
        return {split: len(examples) for split, examples in self.splits.items()}


@dataclass
class MultiTaskData:
    """All tasks and the corpora that carry them; `joint` when one corpus holds every task."""

    name: str
    tasks: list[TaskSpec]
    corpora: list[Corpus]
    joint: bool
    stats: dict[str, Any] = field(default_factory=dict)

    def task(self, name: str) -> TaskSpec:
        for spec in self.tasks:
            if spec.name == name:
                return spec
        raise KeyError(f"no task {name!r}; tasks are {[t.name for t in self.tasks]}")

    def corpus(self, name: str) -> Corpus:
        for corpus in self.corpora:
            if corpus.name == name:
                return corpus
        raise KeyError(f"no corpus {name!r}; corpora are {[c.name for c in self.corpora]}")

    def labels(self) -> dict[str, list[str]]:
        """Task name -> label vocabulary, as saved to a run's `labels.json`."""
        return {spec.name: list(spec.labels) for spec in self.tasks}


def task_kind(label: str | list[str]) -> TaskKind:
    """A label's task kind: a list of tags is a token task, a string a sequence task."""
    return "token" if isinstance(label, list) else "sequence"
