"""Training batches (task sampling, length grouping); word predictions from sub-token ones."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtexp.data.config import SamplingConfig
from mtexp.data.features import Features

log = logging.getLogger(__name__)
GROUP_CHUNK_BATCHES = 50


def task_probabilities(sizes: Mapping[str, int], strategy: str, temperature: float = 1.0) -> dict[str, float]:
    """Sampling probability per corpus: proportional (n_i), temperature (n_i^(1/T)) or uniform."""
    n = np.array([sizes[c] for c in sizes], dtype=float)
    if strategy == "proportional":
        weights = n
    elif strategy == "temperature":
        weights = n ** (1.0 / temperature)
    else:
        weights = np.ones_like(n)
    return dict(zip(sizes, (weights / weights.sum()).tolist(), strict=True))


def allocate(total: int, probabilities: Mapping[str, float]) -> dict[str, int]:
    """Split `total` steps by `probabilities` (largest remainder, ties in key order)."""
    exact = np.array(list(probabilities.values())) * total
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return dict(zip(probabilities, counts.tolist(), strict=True))


@dataclass
class TrainBatches:
    """One epoch of training batches: `plan` holds the corpus of each step, in order."""

    features: Features
    batch_size: int
    plan: list[str]
    seed: int
    epoch: int
    group_by_length: bool
    step_counts: dict[str, int] = field(default_factory=dict)
    corpus_steps: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iterate()

    def iterate(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """The epoch's batches from position `start` of `plan` on: the very batches, in the same
        order, that a pass from the beginning yields there (those before it are drawn, not built),
        so that an epoch interrupted after `start` batches continues exactly."""
        names = [c.name for c in self.features.data.corpora]
        streams = {
            name: _index_batches(
                self.features.table(name, "train").lengths, self.batch_size,
                np.random.default_rng([self.seed, self.epoch, 1 + i]), self.group_by_length,
            )
            for i, name in enumerate(names)
        }
        for name in self.plan[:start]:
            next(streams[name])
        collate = self.features.collator.collate
        for name in self.plan[start:]:
            yield collate(self.features.table(name, "train"), next(streams[name]), name)


def train_batches(
    features: Features,
    batch_size: int,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    epoch: int = 0,
    group_by_length: bool = False,
) -> TrainBatches:
    """An epoch of training batches, each from one corpus (joint data: every task in each batch).

    The step budget is `sampling.steps_per_epoch`, or by default one pass over every corpus
    (sum of ceil(n_i / batch_size)). Steps go to corpora by `sampling.strategy`: exact shares
    (largest remainder) for proportional/temperature, in a seeded random order; round_robin
    cycles the corpora. A corpus that runs out starts a fresh shuffle. `step_counts` has the
    steps per task. With `group_by_length`, each shuffle is sorted by length within chunks of
    50 batches and the batches are then shuffled.
    """
    sampling = sampling or SamplingConfig()
    sizes = {c.name: len(c.splits["train"]) for c in features.data.corpora}
    budget = sampling.steps_per_epoch or sum(math.ceil(n / batch_size) for n in sizes.values())
    names = list(sizes)
    if sampling.strategy == "round_robin":
        plan = [names[k % len(names)] for k in range(budget)]
    else:
        probs = task_probabilities(sizes, sampling.strategy, sampling.temperature)
        plan = [name for name, count in allocate(budget, probs).items() for _ in range(count)]
        order = np.random.default_rng([seed, epoch, 0]).permutation(len(plan))
        plan = [plan[i] for i in order]
    corpus_steps = dict(Counter(plan))
    step_counts = {t.name: 0 for t in features.data.tasks}
    for corpus in features.data.corpora:
        for task in corpus.tasks:
            step_counts[task] += corpus_steps.get(corpus.name, 0)
    log.info("epoch %d: %d steps (%s), per task %s", epoch, budget, sampling.strategy, step_counts)
    return TrainBatches(features, batch_size, plan, seed, epoch, group_by_length,
                        step_counts, corpus_steps)


def _index_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group: bool
) -> Iterator[np.ndarray]:
    """Endless batches of row indices: shuffle after shuffle, optionally length-grouped."""
    n = len(lengths)
    while True:
        order = rng.permutation(n)
        if group:
            chunk = GROUP_CHUNK_BATCHES * batch_size
            for start in range(0, n, chunk):
                part = order[start : start + chunk]
                order[start : start + chunk] = part[np.argsort(lengths[part], kind="stable")]
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        if group:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        yield from batches


def token_predictions_to_words(pred_ids: Any, word_ids: Any, n_words: int, fill: int = 0) -> list[int]:
    """Word-level predictions from sub-token ones: each word takes its first sub-token's
    prediction; words with no sub-token (lost to truncation) get `fill` (id 0 = "O")."""
    pred = _numpy(pred_ids)
    words = _numpy(word_ids)
    out = np.full(int(n_words), fill, dtype=np.int64)
    valid = (words >= 0) & (words < n_words)
    unique, first = np.unique(words[valid], return_index=True)
    out[unique] = pred[valid][first]
    return out.tolist()


def _numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)
