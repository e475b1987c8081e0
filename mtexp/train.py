"""`mtexp-train`: train the multi-task model for one combination of config groups.

    mtexp-train                                   # bundled MiniLM on the built-in data
    mtexp-train data=snips freezing=backbone      # any group option, any key
    mtexp-train -m freezing=none,backbone seed=0,1,2   # a sweep
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
import transformers
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mtexp.backbones import BundledModelError
from mtexp.build import (
    build_model,
    build_run_features,
    check_backbone,
    check_configured_tasks,
    load_data_checked,
    pick_device,
)
from mtexp.callbacks import default_callbacks, finishing, resume_source
from mtexp.checkpoint import check_labels, check_resume, resume_labels
from mtexp.config import ConfigError, RunConfig, validate
from mtexp.data import DataError
from mtexp.distributed import (
    DistContext,
    PeerFailed,
    broadcast_object,
    context_from_env,
    init_distributed,
    rank_device,
    shared_outcome,
    shutdown_distributed,
)
from mtexp.measure import Pretrained, run_metrics
from mtexp.model import MultiTaskModel
from mtexp.precision import resolve_precision
from mtexp.progress import library_progress, progress_mode
from mtexp.resources import reuse_freed_memory
from mtexp.rundir import CheckpointError, RunDir
from mtexp.runlife import FAILED_RUNS, RunLife, RunRecord, stop_on_termination
from mtexp.runlock import RunDirBusy, RunLock
from mtexp.savedmodel import write_model
from mtexp.summary import format_metrics_table
from mtexp.trackers import TrackerError
from mtexp.trainer import Trainer, TrainResult

log = logging.getLogger("mtexp.train")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def run(cfg: DictConfig, run_dir: Path, choices: Mapping[str, str] | None = None,
        overrides: Sequence[str] | None = None, hydra_config: DictConfig | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration, writing the run directory. Returns metrics.json.

    The directory is locked while the run lives (`mtexp.runlock`); how the run starts and how
    its ending is recorded is `mtexp.runlife`'s: a refused run leaves the directory as it was.
    `hydra_config`, Hydra's config of the job (`{"hydra": ...}`), is kept in `.hydra/` once the run
    holds its directory. Under torchrun every rank trains and every rank refuses what rank 0
    refuses (`mtexp.distributed.shared_outcome`); rank 0's run directory is the one written.
    """
    context = context_from_env()
    record = RunRecord(cfg, dict(choices or {}), list(overrides or []), hydra_config)
    lock = RunLock(Path(run_dir)) if context.is_main else None
    busy = lock.try_acquire() if lock is not None else None
    if busy is not None and not context.enabled:
        raise busy
    try:
        # The life starts once the lock is held: what the directory holds is read under it.
        with RunLife(RunDir(Path(run_dir)), record, writes=context.is_main and busy is None) as life:
            metrics = start_and_train(cfg, life, context, busy)
            life.complete()
    finally:
        if lock is not None:
            lock.release()
    return metrics


def start_and_train(cfg: DictConfig, life: RunLife, context: DistContext,
                    busy: RunDirBusy | None) -> dict[str, Any]:
    """Check the config, agree with every rank that the run may start, train."""
    run_config = checked_config(cfg)
    try:
        device = rank_device(pick_device(run_config.trainer.device), context)
        init_distributed(device)
        with shared_outcome(context):
            if context.is_main:
                claim_directory(run_config, life, busy, device, context)
        directory = RunDir(Path(broadcast_object(str(life.directory.path), context)))
        return train_and_evaluate(run_config, directory, device, context, life)
    finally:
        shutdown_distributed()


def checked_config(cfg: DictConfig) -> RunConfig:
    """The validated config, checked against what it names (the backbone and its layers, the
    tasks where the data's config names them) before any data loads."""
    run_config = validate(cfg)
    check_backbone(run_config)
    check_configured_tasks(run_config)
    return run_config


def claim_directory(run: RunConfig, life: RunLife, busy: RunDirBusy | None, device: torch.device,
                    context: DistContext) -> None:
    """Refuse the run (a live run holds the directory; a run there that the config neither resumes
    nor overwrites; a checkpoint written under another config), or take the directory now. A run
    that resumes its own directory takes it only once its data has loaded and matches the
    checkpoint (`train_and_evaluate`): until then nothing there changes."""
    if busy is not None:
        raise busy
    trainer = run.trainer
    source = resume_source(trainer.resume, life.directory)
    resumes_here = source == life.directory and life.had_run
    life.check_takeover(resumes_here, trainer.overwrite)
    check_resume(run, source)
    if not resumes_here:
        take_directory(life, run, device, context)


def take_directory(life: RunLife, run: RunConfig, device: torch.device, context: DistContext) -> None:
    """The run takes its directory (`RunLife.begin`), then records its environment (env.json)."""
    if life.begun:
        return
    life.begin(run.trainer.overwrite)
    if life.writes:
        life.directory.write_environment(device, context.world_size,
                                         precision=resolve_precision(run.trainer.precision, device))


def train_and_evaluate(run: RunConfig, run_dir: RunDir, device: torch.device, context: DistContext,
                       life: RunLife) -> dict[str, Any]:
    """Build, train, measure; rank 0 writes the run's files and reports to the trackers."""
    if run.trainer.threads:
        torch.set_num_threads(run.trainer.threads)
    if device.type == "cpu":
        reuse_freed_memory()
    callbacks = default_callbacks(run, run_dir, context)  # trackers connect here, before any data
    progress = progress_mode(run.trainer.progress and context.is_main)
    with finishing(callbacks, run_dir), library_progress(progress):
        data = load_data_checked(run)
        with shared_outcome(context):  # a resume takes its directory here, its data checked
            check_labels(resume_labels(resume_source(run.trainer.resume, run_dir)), data.labels())
            if context.is_main:
                take_directory(life, run, device, context)
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


# Errors of the user's making (a config key, a data file, the run directory): their message says
# what to change, so it is shown without a traceback (HYDRA_FULL_ERROR=1 or debug logging shows it).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataError, RunDirBusy, CheckpointError, TrackerError, BundledModelError, PeerFailed,
)


def show_traceback() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or log.isEnabledFor(logging.DEBUG)


def print_error(message: str) -> None:
    """One write per message: under torchrun every rank shares stderr, and print() writes the
    text and its newline separately, so two ranks' lines could run together."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    transformers.utils.logging.disable_progress_bar()
    run_dir, choices, overrides, multirun = hydra_context()
    try:
        metrics = run(cfg, run_dir, choices, overrides, HydraConfig.instance().cfg)
    except USER_ERRORS as error:
        if show_traceback() and not multirun:
            raise
        if multirun:  # one failed job must not stop the sweep: its status.json records why
            FAILED_RUNS.append(str(run_dir))
            log.error("run failed: %s: %s", run_dir, error, exc_info=show_traceback())
            return None
        print_error(f"Error: {error}")
        raise SystemExit(1) from None
    except Exception:
        if not multirun:
            raise
        FAILED_RUNS.append(str(run_dir))
        log.exception("run failed: %s", run_dir)
        return None
    if context_from_env().is_main:
        print(format_metrics_table(metrics, Path(run_dir)))
    return metrics["test"].get("score")


# Ranks other than 0 leave no Hydra output: rank 0's run directory is the run's record.
SILENT_RANK_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra.run.dir=.")


def main() -> int:
    """`mtexp-train`: 0 when every run completed; 1 when a run (or a multirun's job) failed;
    128 + the signal's number when SIGTERM or SIGINT stopped it (status `interrupted`)."""
    if not context_from_env().is_main:
        sys.argv.extend(SILENT_RANK_OVERRIDES)
    stop_on_termination()
    try:
        hydra_main()
    except KeyboardInterrupt as interruption:
        signum = getattr(interruption, "signum", signal.SIGINT)
        print_error(f"Interrupted by {signal.Signals(signum).name}: resume with trainer.resume=true")
        return 128 + signum
    if FAILED_RUNS:
        print_error(f"{len(FAILED_RUNS)} run(s) failed; see their status.json: {', '.join(FAILED_RUNS)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
