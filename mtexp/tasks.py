"""What a task's kind decides outside the data: its headline metric and the A / B head aliases."""

from __future__ import annotations

from collections.abc import Mapping

# The metric each kind of task is judged by; a split's `score` is the mean over its tasks.
HEADLINE_METRIC: dict[str, str] = {"sequence": "accuracy", "token": "f1"}
SCORE = "score"
# Config keys that name a head (freezing.head, optim.lr_heads) also take "A" for the first
# sequence task (Task A, e.g. intent) and "B" for the first token task (Task B, e.g. slots).
HEAD_ALIASES: dict[str, str] = {"A": "sequence", "B": "token"}


def headline_metric(kind: str) -> str:
    """`accuracy` for a sequence task, `f1` for a token task."""
    try:
        return HEADLINE_METRIC[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}: a task is a sequence or a token task") from None


def resolve_head(head: str, kinds: Mapping[str, str]) -> str | None:
    """The task that `head` names: a task of `kinds` (task -> kind, in task order) itself, or for
    "A" / "B" the first sequence / token task; None when there is no such task."""
    if head in kinds:
        return head
    kind = HEAD_ALIASES.get(head)
    return next((task for task, task_kind in kinds.items() if task_kind == kind), None) if kind else None
