"""Task metrics (intent accuracy/F1, entity-level slot F1), joint accuracy, convergence."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2
from sklearn.metrics import accuracy_score, f1_score

from mtexp.tasks import headline_metric


def sequence_metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels present in `gold` or `pred`."""
    _check_same_length(gold, pred, "sequence labels")
    if not gold:
        raise ValueError("sequence_metrics needs at least one example")
    labels = sorted(set(gold) | set(pred))
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
    }


def token_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level precision/recall/F1 (seqeval strict IOB2), per-entity F1 and word accuracy.

    With no entity in either gold or prediction, precision, recall and F1 are 0.
    """
    _check_same_length(gold, pred, "tag sequences")
    for index, (gold_tags, pred_tags) in enumerate(zip(gold, pred, strict=True)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(
                f"sentence {index}: {len(gold_tags)} gold tags but {len(pred_tags)} predicted tags"
            )
        _check_iob2(gold_tags, index, "gold")
        _check_iob2(pred_tags, index, "predicted")
    gold_lists = [list(tags) for tags in gold]
    pred_lists = [list(tags) for tags in pred]
    with warnings.catch_warnings():
        # seqeval averages over an empty entity set when no entity exists at all.
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(
            gold_lists, pred_lists, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
        )
    micro = report["micro avg"]
    per_entity = {
        name: float(scores["f1-score"])
        for name, scores in sorted(report.items())
        if not name.endswith(" avg")
    }
    n_words = sum(len(tags) for tags in gold_lists)
    n_right = sum(
        g == p
        for gold_tags, pred_tags in zip(gold_lists, pred_lists, strict=True)
        for g, p in zip(gold_tags, pred_tags, strict=True)
    )
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "per_entity": per_entity,
        "token_accuracy": n_right / n_words if n_words else 0.0,
    }


def joint_sentence_accuracy(
    gold_intents: Sequence[str],
    pred_intents: Sequence[str],
    gold_tags: Sequence[Sequence[str]],
    pred_tags: Sequence[Sequence[str]],
) -> float:
    """Fraction of sentences whose intent and every slot tag are right."""
    n = len(gold_intents)
    for name, values in (
        ("pred_intents", pred_intents),
        ("gold_tags", gold_tags),
        ("pred_tags", pred_tags),
    ):
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} items but gold_intents has {n}")
    if n == 0:
        raise ValueError("joint_sentence_accuracy needs at least one sentence")
    right = 0
    for index in range(n):
        if len(gold_tags[index]) != len(pred_tags[index]):
            raise ValueError(
                f"sentence {index}: {len(gold_tags[index])} gold tags "
                f"but {len(pred_tags[index])} predicted tags"
            )
        same_tags = list(gold_tags[index]) == list(pred_tags[index])
        right += gold_intents[index] == pred_intents[index] and same_tags
    return right / n


def primary_score(
    metrics_for_split: Mapping[str, Mapping[str, Any]], tasks: Iterable[Any]
) -> float:
    """Mean of each task's headline metric (sequence: accuracy, token: f1)."""
    kinds = _kinds(tasks)
    if not kinds:
        raise ValueError("primary_score needs at least one task")
    scores = []
    for name, kind in kinds.items():
        metric = headline_metric(kind)
        try:
            scores.append(float(metrics_for_split[name][metric]))
        except KeyError as error:
            raise KeyError(f"no {name}.{metric} among the metrics for this split") from error
    return float(np.mean(scores))


def convergence_measures(
    history: pd.DataFrame | Sequence[float],
    train_scores: Sequence[float | None] | None = None,
    tasks: Iterable[Any] | None = None,
    dev_column: str | None = None,
    train_column: str | None = None,
) -> dict[str, int | float | None]:
    """`epochs_to_95pct`, `best_epoch` (both 1-based) and `overfit_gap` from per-epoch scores.

    `history` is a list of dev scores, one per epoch, or a history DataFrame: then the dev
    score is `dev_column`, or the mean of `dev.<task>.<headline metric>` over `tasks`; the
    train score likewise (`train_column` or `train.<task>.<metric>` when present). DataFrame
    rows without a dev score are skipped and epochs are read from its `epoch` column when it
    has one. `overfit_gap` is train minus dev at the best epoch, None without train scores.
    """
    if isinstance(history, pd.DataFrame):
        epochs, dev, train = _scores_from_frame(history, tasks, dev_column, train_column)
        if train_scores is not None:
            train = [_as_float(value) for value in train_scores]
    else:
        dev = [_as_float(value) for value in history]
        epochs = list(range(1, len(dev) + 1))
        train = None if train_scores is None else [_as_float(value) for value in train_scores]
    if train is not None and len(train) != len(dev):
        raise ValueError(f"{len(train)} train scores for {len(dev)} dev scores")
    if not dev or all(value is None for value in dev):
        return {"epochs_to_95pct": None, "best_epoch": None, "overfit_gap": None}
    valid = [(i, value) for i, value in enumerate(dev) if value is not None]
    best_index, best = max(valid, key=lambda item: (item[1], -item[0]))
    first = next(i for i, value in valid if value >= 0.95 * best)
    gap = None
    if train is not None and train[best_index] is not None:
        gap = train[best_index] - best
    return {"epochs_to_95pct": epochs[first], "best_epoch": epochs[best_index], "overfit_gap": gap}


def _kinds(tasks: Iterable[Any] | Mapping[str, str]) -> dict[str, str]:
    """Task name -> kind, from TaskSpec-like objects (`.name`, `.kind`) or a name -> kind mapping."""
    return dict(tasks) if isinstance(tasks, Mapping) else {task.name: task.kind for task in tasks}


def _scores_from_frame(
    frame: pd.DataFrame,
    tasks: Iterable[Any] | None,
    dev_column: str | None,
    train_column: str | None,
) -> tuple[list[int], list[float | None], list[float | None] | None]:
    if dev_column is not None:
        dev_columns = [dev_column]
        train_columns = [train_column] if train_column is not None else []
    elif tasks is not None:
        metrics = {name: headline_metric(kind) for name, kind in _kinds(tasks).items()}
        dev_columns = [f"dev.{name}.{metric}" for name, metric in metrics.items()]
        train_columns = [f"train.{name}.{metric}" for name, metric in metrics.items()]
    else:
        raise ValueError("a history DataFrame needs `tasks` or `dev_column`")
    missing = [column for column in dev_columns if column not in frame.columns]
    if missing:
        raise KeyError(f"history has no column(s) {missing}")
    rows = frame.dropna(subset=dev_columns)
    dev = [_as_float(value) for value in rows[dev_columns].mean(axis=1)]
    epochs = (
        [int(value) for value in rows["epoch"]]
        if "epoch" in rows.columns
        else list(range(1, len(rows) + 1))
    )
    train = None
    if train_columns and all(column in frame.columns for column in train_columns):
        train = [_as_float(value) for value in rows[train_columns].mean(axis=1, skipna=False)]
    return epochs, dev, train


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _check_same_length(gold: Sequence, pred: Sequence, what: str) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold {what} but {len(pred)} predicted")


def _check_iob2(tags: Sequence[str], index: int, which: str) -> None:
    for tag in tags:
        if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
            raise ValueError(f"sentence {index}: {which} tag {tag!r} is not IOB2 (O, B-x or I-x)")
