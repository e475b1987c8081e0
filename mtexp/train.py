"""`mtexp-train`: train the multi-task model for one combination of config groups.

    mtexp-train                                   # bundled MiniLM on the built-in data
    mtexp-train data=snips freezing=backbone      # any group option, any key
    mtexp-train -m freezing=none,backbone seed=0,1,2   # a sweep
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
import transformers
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mtexp.build import build_model, build_run_features, load_data_checked, pick_device
from mtexp.callbacks import default_callbacks, finishing
from mtexp.config import RunConfig, validate
from mtexp.distributed import (
    DistContext,
    broadcast_object,
    context_from_env,
    init_distributed,
    rank_device,
    shutdown_distributed,
)
from mtexp.measure import Pretrained, run_metrics
from mtexp.model import MultiTaskModel
from mtexp.precision import resolve_precision
from mtexp.progress import library_progress, progress_mode
from mtexp.resources import reuse_freed_memory
from mtexp.rundir import RunDir, now_iso, write_model
from mtexp.summary import format_metrics_table
from mtexp.trainer import Trainer, TrainResult

log = logging.getLogger("mtexp.train")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def run(cfg: DictConfig, run_dir: Path, choices: dict[str, str] | None = None,
        overrides: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration, writing the run directory. Returns metrics.json.

    Under torchrun every rank trains; rank 0's run directory is the one written.
    """
    run_config = validate(cfg)
    context = context_from_env()
    device = rank_device(pick_device(run_config.trainer.device), context)
    init_distributed(device)
    directory = RunDir(Path(broadcast_object(str(run_dir), context)))
    writes = context.is_main
    started = now_iso()
    if writes:
        directory.create()
        directory.write_status("running", started)
    try:
        if writes:
            directory.write_config(cfg, choices or {}, overrides or [])
        metrics = train_and_evaluate(run_config, directory, device, context)
    except BaseException as error:
        if writes:
            directory.write_status("failed", started, error)
        raise
    finally:
        shutdown_distributed()
    if writes:
        directory.write_status("completed", started)
    return metrics


def train_and_evaluate(run: RunConfig, run_dir: RunDir, device: torch.device,
                       context: DistContext) -> dict[str, Any]:
    """Build, train, measure; rank 0 writes the run's files and reports to the trackers."""
    if run.trainer.threads:
        torch.set_num_threads(run.trainer.threads)
    if device.type == "cpu":
        reuse_freed_memory()
    if context.is_main:
        run_dir.write_environment(device, context.world_size,
                                  precision=resolve_precision(run.trainer.precision, device))
    callbacks = default_callbacks(run, run_dir, context)  # trackers connect here, before any data
    progress = progress_mode(run.trainer.progress and context.is_main)
    with finishing(callbacks, run_dir), library_progress(progress):
        data = load_data_checked(run)
        model = build_model(run, data).to(device)
        features = build_run_features(run, data, model.encoder.tokenizer)
        if context.is_main:
            run_dir.write_labels(data.tasks)
        pretrained = Pretrained.capture(run, model.encoder)
        trainer = Trainer(run, model, data, features, device, run_dir, context, callbacks)
        result = trainer.fit()
        run.freezing.scenario.finish(model, run_dir.path if context.is_main else None)
        metrics = run_metrics(run, data, features, trainer.runner, result, pretrained, context.world_size)
        if context.is_main:
            write_outputs(run_dir, run, model, result, metrics)
    return metrics


def write_outputs(run_dir: RunDir, run: RunConfig, model: MultiTaskModel, result: TrainResult,
                  metrics: dict[str, Any]) -> None:
    """history.csv (and steps.csv), the trained model, then metrics.json: the run is complete."""
    run_dir.write_history(result.state.history, result.state.steps)
    write_model(run_dir.path, model, {"seed": str(run.seed)})
    run_dir.write_metrics(metrics)


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
