"""`mtexp-train`: train the multi-task model for one combination of config groups.

    mtexp-train                                   # bundled MiniLM on the built-in data
    mtexp-train data=snips freezing=backbone      # any group option, any key
    mtexp-train -m freezing=none,backbone seed=0,1,2   # a sweep
"""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import torch
import transformers
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mtexp.checkpoint import save_model
from mtexp.config import RunConfig, check_task_names, validate
from mtexp.data import MultiTaskData, load_data
from mtexp.data.features import Features, build_features
from mtexp.distributed import (
    DistContext,
    broadcast_object,
    context_from_env,
    init_distributed,
    rank_device,
    shutdown_distributed,
)
from mtexp.drift import layer_cka, sample_sentences, sts_spearman
from mtexp.encoder import SentenceEncoder
from mtexp.evaluate import evaluate_split
from mtexp.io import atomic_write_json, atomic_write_text
from mtexp.metrics import convergence_measures
from mtexp.model import MultiTaskModel
from mtexp.resources import reuse_freed_memory
from mtexp.rundir import METRICS_FILE, now_iso, write_config, write_environment, write_status
from mtexp.seeding import seed_everything
from mtexp.summary import format_metrics_table
from mtexp.trainer import Trainer, TrainResult

log = logging.getLogger("mtexp.train")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but no CUDA device is available")
    return torch.device(name)


def build_encoder(run: RunConfig) -> SentenceEncoder:
    backbone = run.backbone
    if backbone.random_init:
        return SentenceEncoder.random_init(
            num_layers=backbone.num_layers,
            hidden_size=backbone.hidden_size,
            num_heads=backbone.num_heads,
            intermediate_size=backbone.intermediate_size,
            seed=run.seed,
            pooling=backbone.pooling,
            max_length=backbone.max_length,
            tokenizer_source=backbone.name_or_path,
        )
    return SentenceEncoder.from_pretrained(
        backbone.name_or_path,
        pooling=backbone.pooling,
        max_length=backbone.max_length,
        trust_remote_code=backbone.trust_remote_code,
    )


def run(cfg: DictConfig, run_dir: Path, choices: dict[str, str] | None = None,
        overrides: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration, writing the run directory. Returns metrics.json.

    Under torchrun every rank trains; rank 0's run directory is the one written.
    """
    run_config = validate(cfg)
    context = context_from_env()
    device = rank_device(pick_device(run_config.trainer.device), context)
    init_distributed(device)
    run_dir = Path(broadcast_object(str(run_dir), context))
    writes = context.is_main
    started = now_iso()
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_status(run_dir, "running", started)
    try:
        if writes:
            write_config(run_dir, cfg, choices or {}, overrides or [])
        metrics = train_and_evaluate(run_config, run_dir, device, context)
    except BaseException as error:
        if writes:
            write_status(run_dir, "failed", started, error)
        raise
    finally:
        shutdown_distributed()
    if writes:
        write_status(run_dir, "completed", started)
    return metrics


def build_model(run: RunConfig, data: MultiTaskData) -> MultiTaskModel:
    """The encoder and one head per task, initialised from the run's seed."""
    seed_everything(run.seed)
    encoder = build_encoder(run)
    seed_everything(run.seed)
    return MultiTaskModel(
        encoder, data.tasks, run.model.head_hidden, run.model.head_dropout, run.model.loss_weights
    )


def train_and_evaluate(run: RunConfig, run_dir: Path, device: torch.device,
                       context: DistContext) -> dict[str, Any]:
    if run.trainer.threads:
        torch.set_num_threads(run.trainer.threads)
    if device.type == "cpu":
        reuse_freed_memory()
    if context.is_main:
        write_environment(run_dir, device, context.world_size)
    data = load_data_checked(run)
    model = build_model(run, data).to(device)
    features = build_run_features(run, data, model.encoder.tokenizer)
    if context.is_main:
        atomic_write_json(run_dir / "labels.json", {task.name: list(task.labels) for task in data.tasks})
    pretrained = copy.deepcopy(model.encoder).eval() if run.eval.cka_sentences else None
    sts_before = measure_sts(run, model.encoder)

    trainer = Trainer(run, model, data, features, device, run_dir, context)
    result = trainer.fit()
    model.eval()
    dev = evaluate_split(data, "dev", trainer.forward, trainer.batches_for)
    test = evaluate_split(data, "test", trainer.forward, trainer.batches_for)
    metrics = {
        "status": "completed",
        "seed": run.seed,
        "best_epoch": result.state.best_epoch,
        "epochs_run": result.state.epoch,
        "dev": dev,
        "test": test,
        "cost": cost_measures(model, result),
        "drift": drift_measures(run, data, pretrained, model.encoder, sts_before),
        "convergence": convergence_measures(pd.DataFrame(result.state.history), tasks=data.tasks),
        "data": {**data.stats, **features.stats, "task_steps": result.task_steps},
        "world_size": context.world_size,
    }
    if context.is_main:
        write_history(run_dir, result)
        save_model(run_dir / "model.safetensors", model, {"seed": str(run.seed)})
        atomic_write_json(run_dir / METRICS_FILE, metrics)
    return metrics


def load_data_checked(run: RunConfig) -> MultiTaskData:
    """The run's data; config keys that name tasks are checked against it before any training."""
    seed_everything(run.seed)
    data = load_data(run.data, seed=run.seed)
    check_task_names(run, [task.name for task in data.tasks])
    return data


def build_run_features(run: RunConfig, data: MultiTaskData, tokenizer) -> Features:
    return build_features(
        data, tokenizer, run.backbone.max_length,
        label_all_tokens=run.data.label_all_tokens, cache_dir=run.data.cache_dir,
    )


def cost_measures(model: MultiTaskModel, result: TrainResult) -> dict[str, float | int]:
    state = result.state
    seconds = state.train_seconds + result.cache_seconds
    return {
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": result.params_trainable,
        "train_seconds": round(seconds, 3),
        "cache_seconds": round(result.cache_seconds, 3),
        "seconds_per_epoch": round(seconds / state.epoch, 3) if state.epoch else 0.0,
        "train_samples_per_second": round(state.samples_seen / seconds, 2) if seconds else 0.0,
        "peak_memory_mb": round(result.peak_memory_mb, 1),
        "train_memory_mb": round(result.train_memory_mb, 1),
    }


def measure_sts(run: RunConfig, encoder: SentenceEncoder) -> float | None:
    if not run.eval.sts_path:
        return None
    return sts_spearman(encoder, run.eval.sts_path, max_pairs=run.eval.sts_max_pairs, seed=run.seed)


def drift_measures(run: RunConfig, data, pretrained: SentenceEncoder | None, trained: SentenceEncoder,
                   sts_before: float | None) -> dict[str, Any]:
    """How far training moved the encoder: per-layer CKA to the pre-trained one, STS before/after."""
    drift: dict[str, Any] = {}
    if pretrained is not None:
        dev_sentences = [" ".join(example.words) for corpus in data.corpora
                         for example in corpus.splits.get("dev", [])]
        sample = sample_sentences(dev_sentences, n=run.eval.cka_sentences, seed=run.seed)
        drift["cka"] = layer_cka(pretrained, trained, sample, seed=run.seed)
    if sts_before is not None:
        drift["sts_spearman_before"] = sts_before
        drift["sts_spearman_after"] = measure_sts(run, trained)
    return drift


def write_history(run_dir: Path, result: TrainResult) -> None:
    atomic_write_text(run_dir / "history.csv", pd.DataFrame(result.state.history).to_csv(index=False))
    if result.state.steps:
        atomic_write_text(run_dir / "steps.csv", pd.DataFrame(result.state.steps).to_csv(index=False))


def hydra_context() -> tuple[Path, dict[str, str], list[str], bool]:
    hydra_cfg = HydraConfig.get()
    choices = {
        group: str(option) for group, option in hydra_cfg.runtime.choices.items()
        if not group.startswith("hydra")
    }
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return Path(hydra_cfg.runtime.output_dir), choices, list(hydra_cfg.overrides.task), multirun


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    transformers.utils.logging.disable_progress_bar()
    run_dir, choices, overrides, multirun = hydra_context()
    try:
        metrics = run(cfg, run_dir, choices, overrides)
    except Exception:
        if not multirun:
            raise
        # One failed job must not stop the sweep: its status.json records why.
        log.exception("run failed: %s", run_dir)
        return None
    if context_from_env().is_main:
        print(format_metrics_table(metrics, Path(run_dir)))
    return metrics["test"].get("score")


# Ranks other than 0 leave no Hydra output: rank 0's run directory is the run's record.
SILENT_RANK_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra.run.dir=.")


def main() -> None:
    if not context_from_env().is_main:
        sys.argv.extend(SILENT_RANK_OVERRIDES)
    hydra_main()


if __name__ == "__main__":
    sys.exit(main())
