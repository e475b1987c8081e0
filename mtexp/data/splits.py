"""Seeded, stratified selection: carving dev/test out of train and subsampling train."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from mtexp.data.types import DataError, Example


def stratified_indices(
    keys: list[str], count: int, rng: np.random.Generator, keep_one: bool = False
) -> np.ndarray:
    """Pick `count` of `len(keys)` indices, each class in proportion (largest remainder).

    With `keep_one`, every class keeps at least one unpicked member, so carving a dev split
    never removes a label from train. Returns sorted indices.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    classes = sorted(groups)
    sizes = np.array([len(groups[c]) for c in classes])
    caps = sizes - 1 if keep_one else sizes
    exact = count * sizes / sizes.sum()
    quota = np.minimum(np.floor(exact).astype(int), caps)
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    while quota.sum() < count and (quota < caps).any():
        for c in order:
            if quota.sum() < count and quota[c] < caps[c]:
                quota[c] += 1
    picked = [rng.permutation(groups[c])[:q] for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picked)).astype(int)


def sequence_keys(examples: list[Example], task: str | None) -> list[str] | None:
    """The stratification keys (Task A labels) of `examples`, or None without a sequence task."""
    if task is None:
        return None
    return [str(ex.labels[task]) for ex in examples]


def carve(
    examples: list[Example], fraction: float, task: str | None, rng: np.random.Generator
) -> tuple[list[Example], list[Example]]:
    """Split `examples` into (kept, carved) with `fraction` carved, stratified by `task`."""
    n = len(examples)
    count = min(max(1, round(n * fraction)), n - 1)
    if count < 1:
        raise DataError(f"cannot carve a split from {n} example(s); add a dev/test file")
    keys = sequence_keys(examples, task)
    held = _pick(keys, n, count, rng, keep_one=True)
    if len(held) == 0:
        raise DataError(f"cannot carve a split: every label occurs once in {n} examples")
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    kept = [ex for ex, m in zip(examples, mask, strict=True) if not m]
    carved = [ex for ex, m in zip(examples, mask, strict=True) if m]
    return kept, carved


def subsample(
    examples: list[Example],
    fraction: float,
    max_examples: int | None,
    task: str | None,
    rng: np.random.Generator,
) -> list[Example]:
    """Keep `fraction` of `examples` (at most `max_examples`), stratified, in the original order."""
    n = len(examples)
    count = max(1, round(n * fraction))
    if max_examples is not None:
        count = min(count, int(max_examples))
    if count >= n:
        return list(examples)
    keys = sequence_keys(examples, task)
    return [examples[i] for i in _pick(keys, n, count, rng, keep_one=False)]


def _pick(
    keys: list[str] | None, n: int, count: int, rng: np.random.Generator, keep_one: bool
) -> np.ndarray:
    if keys is None:
        return np.sort(rng.permutation(n)[:count])
    return stratified_indices(keys, count, rng, keep_one=keep_one)
