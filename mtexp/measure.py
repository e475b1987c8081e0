"""What a finished run measured: the sections of metrics.json.

Scores on dev and test, the budget and how the run ended (`steps`, `stopped_early`,
`converged`), cost (parameters, time, memory), drift (how far training moved the encoder:
per-layer CKA to the pre-trained one, STS before and after), convergence, data.

`cost.train_memory_mb` is what training needs, counted from tensors (`mtexp.resources.
TrainingMemory`): the trainable parameters' gradients and optimizer state, the largest set of
activations autograd saved in a step, and the frozen-feature cache; the same for the same
configuration whatever ran before in the process. `cost.peak_memory_mb` is the process's peak
(resident memory on the CPU, the allocator's peak on a GPU), which does depend on it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mtexp.config import RunConfig
from mtexp.data import MultiTaskData
from mtexp.data.features import Features
from mtexp.drift import layer_cka, sample_sentences, sts_spearman
from mtexp.encoder import SentenceEncoder
from mtexp.metrics import convergence_measures
from mtexp.model import MultiTaskModel
from mtexp.resources import MB
from mtexp.trainer import BatchRunner, TrainResult


@dataclass
class Pretrained:
    """The encoder as it was before training (kept when CKA is measured) and its STS score."""

    encoder: SentenceEncoder | None
    sts: float | None

    @classmethod
    def capture(cls, run: RunConfig, encoder: SentenceEncoder) -> Pretrained:
        copied = copy.deepcopy(encoder).eval() if run.eval.cka_sentences else None
        return cls(copied, measure_sts(run, encoder))


def run_metrics(run: RunConfig, data: MultiTaskData, features: Features, runner: BatchRunner,
                result: TrainResult, pretrained: Pretrained, world_size: int) -> dict[str, Any]:
    """metrics.json of a trained run: the model scored as training left it (best epoch restored)."""
    model = runner.model
    model.eval()
    return {
        "status": "completed",
        "seed": run.seed,
        "best_epoch": result.state.best_epoch,
        "epochs_run": result.state.epoch,
        **ending(result),
        "dev": runner.evaluate("dev"),
        "test": runner.evaluate("test"),
        "cost": cost_measures(model, result),
        "drift": drift_measures(run, data, pretrained, model.encoder),
        "convergence": convergence_measures(pd.DataFrame(result.state.history), tasks=data.tasks),
        "data": {**data.stats, **features.stats, "task_steps": result.task_steps},
        "world_size": world_size,
        "precision": result.precision,
    }


def cost_measures(model: MultiTaskModel, result: TrainResult) -> dict[str, float | int]:
    """Parameters, training time (the feature cache's included), throughput and memory."""
    state = result.state
    seconds = state.train_seconds + result.cache_seconds
    cache = {"feature_cache": result.cache_status} if result.cache_status is not None else {}
    return {
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": result.params_trainable,
        "train_seconds": round(seconds, 3),
        "cache_seconds": round(result.cache_seconds, 3),
        **cache,
        "seconds_per_epoch": round(seconds / state.epoch, 3) if state.epoch else 0.0,
        "train_samples_per_second": round(state.samples_seen / seconds, 2) if seconds else 0.0,
        "peak_memory_mb": round(result.peak_memory_mb, 1),
        "train_memory_mb": round(result.train_memory_mb, 1),
        **{f"{kind}_memory_mb": round(size / MB, 1) for kind, size in vars(result.memory).items()},
    }


def ending(result: TrainResult) -> dict[str, Any]:
    """How the run ended: optimizer steps, whether early stopping ended it, whether it converged
    (false when its best epoch is its last: still improving when the budget ran out; null when
    nothing trains), and the budget's plan."""
    state = result.state
    trained = state.step > 0
    return {
        "steps": state.step,
        "stopped_early": state.stopped_early,
        "converged": state.best_epoch < state.epoch if trained else None,
        "budget": result.plan.record(),
    }


def measure_sts(run: RunConfig, encoder: SentenceEncoder) -> float | None:
    if not run.eval.sts_path:
        return None
    return sts_spearman(encoder, run.eval.sts_path, max_pairs=run.eval.sts_max_pairs, seed=run.seed)


def drift_measures(run: RunConfig, data: MultiTaskData, pretrained: Pretrained,
                   trained: SentenceEncoder) -> dict[str, Any]:
    """How far training moved the encoder: per-layer CKA to the pre-trained one, STS before/after."""
    drift: dict[str, Any] = {}
    if pretrained.encoder is not None:
        dev_sentences = [" ".join(example.words) for corpus in data.corpora
                         for example in corpus.splits.get("dev", [])]
        sample = sample_sentences(dev_sentences, n=run.eval.cka_sentences, seed=run.seed)
        drift["cka"] = layer_cka(pretrained.encoder, trained, sample, seed=run.seed)
    if pretrained.sts is not None:
        drift["sts_spearman_before"] = pretrained.sts
        drift["sts_spearman_after"] = measure_sts(run, trained)
    return drift
