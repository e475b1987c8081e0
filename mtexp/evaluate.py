"""Predict a split, map token predictions back to words, and score every task on words."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from mtexp.data import MultiTaskData
from mtexp.data.batching import token_predictions_to_words
from mtexp.data.types import Corpus, Example, TaskSpec
from mtexp.metrics import joint_sentence_accuracy, primary_score, sequence_metrics, token_metrics
from mtexp.model import ModelOutput

Batch = Mapping[str, Any]
Forward = Callable[[Batch], ModelOutput]


BatchesFor = Callable[[Corpus, str, "list[int] | None"], Iterable[Batch]]


@torch.inference_mode()
def predict(
    forward: Forward,
    batches: Iterable[Batch],
    examples: list[Example],
    tasks: Mapping[str, TaskSpec],
    task_names: Iterable[str],
) -> dict[str, dict[int, object]]:
    """Predicted labels per task, keyed by example index (token tasks: one tag per word)."""
    predicted: dict[str, dict[int, object]] = {name: {} for name in task_names}
    for batch in batches:
        output = forward(batch)
        indices = batch["example_index"].tolist()
        for name, by_index in predicted.items():
            label_ids = output.logits[name].argmax(dim=-1).cpu()
            labels = tasks[name].labels
            if tasks[name].kind == "sequence":
                for row, index in enumerate(indices):
                    by_index[index] = labels[int(label_ids[row])]
                continue
            word_ids = batch["word_ids"].cpu()
            for row, index in enumerate(indices):
                words = token_predictions_to_words(label_ids[row], word_ids[row], len(examples[index].words))
                by_index[index] = [labels[i] for i in words]
    return predicted


def score(
    examples: list[Example], predicted: Mapping[str, list], tasks: Mapping[str, TaskSpec]
) -> dict[str, dict]:
    """Per-task metrics (sequence: accuracy, macro-F1; token: entity P/R/F1 on words)."""
    results: dict[str, dict] = {}
    for name in predicted:
        gold = [example.labels[name] for example in examples]
        if tasks[name].kind == "sequence":
            results[name] = sequence_metrics(gold, predicted[name])
        else:
            results[name] = token_metrics(gold, predicted[name])
    return results


def joint_accuracy(
    examples: list[Example], predicted: Mapping[str, list], tasks: Mapping[str, TaskSpec]
) -> float | None:
    """Share of sentences whose label and every token tag are right (joint corpora only)."""
    kinds = {tasks[name].kind: name for name in predicted}
    if set(kinds) != {"sequence", "token"} or len(predicted) != 2:
        return None
    sequence, token = kinds["sequence"], kinds["token"]
    return joint_sentence_accuracy(
        [example.labels[sequence] for example in examples],
        predicted[sequence],
        [example.labels[token] for example in examples],
        predicted[token],
    )


def evaluate_split(
    data: MultiTaskData,
    split: str,
    forward: Forward,
    batches_for: BatchesFor,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of every task on one split (or a seeded sample of `limit` examples per corpus).

    `score` is the mean of the tasks' headline metrics.
    """
    tasks = {task.name: task for task in data.tasks}
    results: dict[str, Any] = {}
    for corpus in data.corpora:
        examples = corpus.splits.get(split) or []
        if not examples:
            continue
        indices = sample_indices(len(examples), limit, seed)
        by_index = predict(forward, batches_for(corpus, split, indices), examples, tasks, corpus.tasks)
        order = indices if indices is not None else range(len(examples))
        chosen = [examples[i] for i in order]
        predicted = {name: [values[i] for i in order] for name, values in by_index.items()}
        results.update(score(chosen, predicted, tasks))
        if data.joint:
            joint = joint_accuracy(chosen, predicted, tasks)
            if joint is not None:
                results["joint"] = {"sentence_accuracy": joint}
    results["score"] = primary_score(results, data.tasks)
    return results


def sample_indices(size: int, limit: int | None, seed: int) -> list[int] | None:
    """A fixed, seeded, sorted sample of `limit` indices; None means all of them."""
    if limit is None or limit >= size:
        return None
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(size, generator=generator)[:limit].tolist())
