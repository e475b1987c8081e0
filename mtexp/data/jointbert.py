"""JointBERT folders: `<split>/seq.in`, `seq.out` (BIO tags) and `label` (intent), line-aligned."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtexp.data.bio import BioPolicy
from mtexp.data.source import ReadContext, SourceConfig
from mtexp.data.textio import SPLIT_ALIASES, read_lines, resolve_path
from mtexp.data.types import SPLITS, Corpus, DataError, Example


@dataclass
class JointBertSource(SourceConfig):
    """`source: jointbert`: a folder with train/, dev/, test/, each with seq.in, seq.out, label."""

    path: str | None = None
    sequence_task: str | None = "intent"  # the task of `label`; null: not read
    token_task: str | None = "slots"  # the task of `seq.out`; null: not read
    scheme: str = "iob2"

    def task_names(self) -> tuple[str, ...] | None:
        return tuple(task for task in (self.sequence_task, self.token_task) if task) or None


def read_jointbert(src: JointBertSource, ctx: ReadContext) -> Corpus:
    """Read a JointBERT folder; `#`-joined multi-intents (ATIS) are kept as labels of their own."""
    key = ctx.key
    if not src.path:
        raise DataError(f"{key}.path: set the JointBERT folder (with train/, dev/, test/)")
    root = resolve_path(src.path, f"{key}.path")
    seq_task, tok_task = src.sequence_task, src.token_task
    if not seq_task and not tok_task:
        raise DataError(f"{key}: set sequence_task and/or token_task")
    splits: dict[str, list[Example]] = {}
    for split in SPLITS:
        folder = _split_folder(root, split)
        if folder is not None:
            splits[split] = _read_split(folder, split, seq_task, tok_task, ctx.policy)
    if "train" not in splits:
        raise DataError(f"{key}.path: no train/ folder with seq.in in {root}")
    tasks = tuple(t for t in (seq_task, tok_task) if t)
    return Corpus(name=src.name or root.name, tasks=tasks, splits=splits)


def _split_folder(root: Path, split: str) -> Path | None:
    for alias in SPLIT_ALIASES[split]:
        if (root / alias / "seq.in").is_file():
            return root / alias
    return None


def _read_split(
    folder: Path, split: str, seq_task: str | None, tok_task: str | None, policy: BioPolicy
) -> list[Example]:
    seq_in = folder / "seq.in"
    sentences = read_lines(seq_in)
    tags = _aligned_lines(folder / "seq.out", len(sentences), seq_in) if tok_task else None
    intents = _aligned_lines(folder / "label", len(sentences), seq_in) if seq_task else None
    examples = []
    for i, line in enumerate(sentences):
        words = line.split()
        if not words:
            raise DataError(f"{seq_in}:{i + 1}: empty utterance; expected space-separated words")
        labels: dict[str, str | list[str]] = {}
        if intents is not None:
            intent = intents[i].strip()
            if not intent:
                raise DataError(f"{folder / 'label'}:{i + 1}: empty label")
            labels[seq_task] = intent
        if tags is not None:
            labels[tok_task] = _line_tags(tags[i], words, folder, i, split, policy)
        examples.append(Example(words=words, labels=labels))
    return examples


def _aligned_lines(path: Path, count: int, seq_in: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found (it goes with {seq_in})")
    lines = read_lines(path)
    if len(lines) != count:
        raise DataError(f"{path}: {len(lines)} lines, but {seq_in} has {count}; they must align")
    return lines


def _line_tags(
    line: str, words: list[str], folder: Path, i: int, split: str, policy: BioPolicy
) -> list[str]:
    tags = line.split()
    where = f"{folder / 'seq.out'}:{i + 1}"
    if len(tags) != len(words):
        raise DataError(
            f"{where}: {len(tags)} tags, but {folder / 'seq.in'}:{i + 1} has {len(words)} words"
        )
    return policy.normalise(tags, where, split)
