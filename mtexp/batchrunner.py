"""Batches for training and evaluation, and the forward pass under the run's precision, through
the frozen-feature cache once it is built (`BatchRunner`, which the `Trainer` drives)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from mtexp.config import RunConfig, TrainerConfig
from mtexp.data import MultiTaskData, batching
from mtexp.data.batching import TrainBatches, train_batches
from mtexp.data.types import Corpus
from mtexp.evaluate import evaluate_split
from mtexp.feature_cache import FeatureCache
from mtexp.feature_store import cached_features, store_key, store_root
from mtexp.model import ModelOutput, MultiTaskModel
from mtexp.precision import resolve_precision
from mtexp.rundir import flatten

Batch = Mapping[str, Any]
# Per-entity scores stay in metrics.json; one column per entity type would swamp history.csv.
HISTORY_SKIP = frozenset({"per_entity"})


def to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    moved: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            moved[key] = value.to(device, non_blocking=True)
        elif isinstance(value, Mapping):
            moved[key] = {name: tensor.to(device, non_blocking=True) for name, tensor in value.items()}
        else:
            moved[key] = value
    return moved


@contextmanager
def silenced(logger: logging.Logger) -> Iterator[None]:
    """`logger` drops its records inside the block."""
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was_disabled


class BatchRunner:
    """Batches for training and evaluation, and the forward pass under the run's precision,
    through the frozen-feature cache once it is built."""

    def __init__(self, run: RunConfig, model: MultiTaskModel, data: MultiTaskData, features: Any,
                 device: torch.device) -> None:
        self.run = run
        self.cfg: TrainerConfig = run.trainer
        self.model = model
        self.data = data
        self.features = features
        self.device = device
        self.precision = resolve_precision(self.cfg.precision, device)  # fp32 or bf16
        self.cache: FeatureCache | None = None
        self.cache_seconds = 0.0
        self.cache_status: str | None = None  # hit, miss, rebuilt (the on-disk store) or memory

    def autocast(self) -> AbstractContextManager:
        if self.precision != "bf16":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def epoch_batches(self, epoch: int) -> TrainBatches:
        return train_batches(
            self.features,
            self.cfg.batch_size,
            self.run.data.sampling,
            seed=self.run.seed,
            epoch=epoch,
            group_by_length=self.run.data.group_by_length,
        )

    def steps_per_epoch(self) -> int:
        """Optimizer steps in an epoch (every epoch plans as many batches)."""
        with silenced(batching.log):  # only counted here: an epoch's plan is logged when it trains
            planned = len(self.epoch_batches(0))
        return max(math.ceil(planned / self.cfg.grad_accumulation), 1)

    def batches_for(
        self, corpus: Corpus, split: str, indices: list[int] | None = None, batch_size: int | None = None
    ) -> Iterator[Batch]:
        """Evaluation batches (default size `eval_batch_size`), longest first: little padding."""
        table = self.features.table(corpus.name, split)
        rows = np.arange(len(table)) if indices is None else np.asarray(indices)
        rows = rows[np.argsort(-table.lengths[rows], kind="stable")]
        size = batch_size or self.cfg.eval_batch_size
        for start in range(0, len(rows), size):
            batch = self.features.collator.collate(table, rows[start : start + size], corpus.name)
            yield {**batch, "split": split}

    def build_cache(self) -> None:
        """Encode every example once when the encoder never trains (frozen-feature cache),
        or read the encoding from the on-disk store under `paths.cache_root` when another run
        made it already."""
        if not self.cfg.feature_cache or self.run.freezing.scenario.encoder_trains:
            return
        started = time.perf_counter()
        self.model.encoder.eval()
        root = store_root(self.run.paths.cache_root)
        if root is None:
            self.cache, self.cache_status = self.encode_all(), "memory"
        else:
            key, meta = store_key(self.model.encoder, self.features, self.precision,
                                  self.cfg.batch_size, self.device)
            self.cache, self.cache_status = cached_features(root, key, meta, self.encode_all, self.device)
        self.cache_seconds = time.perf_counter() - started

    def encode_all(self) -> FeatureCache:
        """The frozen encoder's outputs for every example of every split."""
        batches = [
            batch
            for corpus in self.data.corpora
            for split, examples in corpus.splits.items()
            if examples
            # training-size batches: the encoder's activations stay small next to the cache
            for batch in self.batches_for(corpus, split, batch_size=self.cfg.batch_size)
        ]
        store_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        with self.autocast():
            return FeatureCache.build(self.model.encoder, batches, self.device, store_dtype)

    def forward(self, batch: Batch) -> ModelOutput:
        batch = to_device(batch, self.device)
        with self.autocast():
            if self.cache is not None:
                token_states, pooled = self.cache.features_for(batch, split=batch.get("split", "train"))
                return self.model.forward_features(
                    token_states.to(self.device), pooled.to(self.device), batch.get("labels") or {}
                )
            return self.model(batch)

    def evaluate(self, split: str, limit: int | None = None, seed: int = 0) -> dict[str, Any]:
        """Every task's metrics on `split` (or a seeded sample of `limit` examples per corpus)."""
        return evaluate_split(self.data, split, self.forward, self.batches_for, limit, seed)

    def dev_scores(self) -> dict[str, Any]:
        """Dev metrics as history.csv columns (`dev.<task>.<metric>`), in eval mode."""
        self.model.eval()
        return flatten(self.evaluate("dev"), "dev.", skip=HISTORY_SKIP, scalars_only=True)

    def train_subset_scores(self) -> dict[str, Any]:
        """Scores on a fixed slice of train, for the overfitting gap; empty when disabled."""
        if self.run.eval.train_subset <= 0:
            return {}
        scores = self.evaluate("train", self.run.eval.train_subset, self.run.seed)
        return flatten(scores, "train.", skip=HISTORY_SKIP, scalars_only=True)
