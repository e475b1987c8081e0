"""Label vocabularies from train, and what happens to dev/test labels that train lacks.

Vocabularies are sorted; token tasks put "O" first (so id 0 is "outside") and hold both
`B-x` and `I-x` for every entity type `x` seen in train (a type seen only as one-word spans
still gets `I-x`, so longer spans of it in dev/test are not "unseen"). With
`unseen_label: fallback`, sequence tasks get the extra label `UNK` (last) and unseen dev/test
labels map to it; unseen token tags become "O", together with the `I-` tags that continue them.
With `unseen_label: error` (the default) an unseen label is a DataError.
"""

from __future__ import annotations

import logging
from collections import Counter

from mtexp.data.bio import OUTSIDE, tag_type
from mtexp.data.types import Corpus, DataError, TaskKind, TaskSpec, task_kind

SEQUENCE_FALLBACK = "UNK"
UNSEEN_MODES = ("error", "fallback")
SHOWN_LABELS = 8

log = logging.getLogger(__name__)


def task_kinds(corpus: Corpus, key: str) -> dict[str, TaskKind]:
    """Each task's kind, read from the first train example."""
    first = corpus.splits["train"][0]
    kinds = {}
    for task in corpus.tasks:
        if task not in first.labels:
            raise DataError(f"{key}: corpus {corpus.name!r} has no labels for task {task!r}")
        kinds[task] = task_kind(first.labels[task])
    return kinds


def build_spec(name: str, kind: TaskKind, corpus: Corpus, unseen: str) -> TaskSpec:
    """The task's labels as seen in (the full) train split, in a stable order."""
    seen: set[str] = set()
    for ex in corpus.splits["train"]:
        value = ex.labels[name]
        if kind == "token":
            seen.update(value)
        else:
            seen.add(value)
    if kind == "token":
        types = {tag_type(tag) for tag in seen} - {None}
        labels = [OUTSIDE, *sorted(f"{p}-{t}" for t in types for p in "BI")]
    else:
        labels = sorted(seen)
        if unseen == "fallback" and SEQUENCE_FALLBACK not in seen:
            labels.append(SEQUENCE_FALLBACK)
    return TaskSpec(name=name, kind=kind, labels=tuple(labels))


def apply_unseen(corpus: Corpus, spec: TaskSpec, unseen: str) -> dict[str, dict[str, int]]:
    """Check dev/test labels against `spec`; map them (fallback) or raise. Returns counts."""
    known = set(spec.labels)
    report: dict[str, dict[str, int]] = {}
    for split, examples in corpus.splits.items():
        if split == "train":
            continue
        counts: Counter = Counter()
        for ex in examples:
            value = ex.labels[spec.name]
            missing = [value] if spec.kind == "sequence" else value
            counts.update(label for label in missing if label not in known)
        if not counts:
            continue
        if unseen != "fallback":
            raise DataError(_unseen_message(corpus.name, spec, split, counts))
        for ex in examples:
            ex.labels[spec.name] = _fallback(ex.labels[spec.name], spec, known)
        report[split] = dict(sorted(counts.items()))
    if report:
        log.warning(_fallback_message(corpus.name, spec, report))
    return report


def _fallback(value: str | list[str], spec: TaskSpec, known: set[str]) -> str | list[str]:
    if spec.kind == "sequence":
        return value if value in known else SEQUENCE_FALLBACK
    out = list(value)
    dropped: str | None = None
    for i, tag in enumerate(out):
        if tag not in known or (dropped and tag == f"I-{dropped}"):
            dropped = tag_type(tag)
            out[i] = OUTSIDE
        else:
            dropped = None
    return out


def _unseen_message(corpus: str, spec: TaskSpec, split: str, counts: Counter) -> str:
    return (
        f"task {spec.name!r} (corpus {corpus!r}), split {split!r}: label(s) not seen in train: "
        f"{_shown(counts)}; set data.unseen_label=fallback to map them to {_target(spec)!r}"
    )


def _fallback_message(corpus: str, spec: TaskSpec, report: dict[str, dict[str, int]]) -> str:
    """One line for every split of a task whose unseen labels were mapped to the fallback."""
    total = sum(sum(counts.values()) for counts in report.values())
    per_split = "; ".join(f"{split}: {_shown(counts)}" for split, counts in report.items())
    return (
        f"task {spec.name!r} (corpus {corpus!r}): {total} dev/test label(s) not seen in train "
        f"mapped to {_target(spec)!r} (data.unseen_label=fallback): {per_split}"
    )


def _shown(counts: Counter | dict[str, int]) -> str:
    items = sorted(counts.items())
    shown = ", ".join(f"{label!r} ({n}x)" for label, n in items[:SHOWN_LABELS])
    return shown + (f" and {len(items) - SHOWN_LABELS} more" if len(items) > SHOWN_LABELS else "")


def _target(spec: TaskSpec) -> str:
    return SEQUENCE_FALLBACK if spec.kind == "sequence" else OUTSIDE
