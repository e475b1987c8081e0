"""`mtexp-tune`: one configuration's learning rates tuned on dev, then confirmed on several seeds.

    mtexp-tune freezing=backbone data=snips                    # one configuration
    mtexp-tune -m -cd sweeps -cn tune_freezing data=snips      # every configuration of a preset

A configuration is a config composed from `conf/tune.yaml` (conf/config.yaml plus a `tune` node)
and the command line, less its learning rates and seed. Its learning rates are searched on the
dev metric of `trainer.early_stopping` (`dev.score` by default; test is never looked at) with
Optuna: TPE sampling in a log-uniform range per learning rate (`search_space`), one seed
(`tune.seed`), each epoch's dev score reported to a median pruner, which ends trials that trail
the others. The best trial's learning rates are then run with every seed of `tune.seeds`.

The sweep folder (`hydra.sweep.dir`; for a single configuration its `hydra.run.dir`) holds:

    tuning.db                       Optuna's storage (SQLite): one study per configuration
    <configuration>/tuning.json     the tuning record (trials, best learning rates, seconds)
    <configuration>/trials/<n>/     one run directory per trial (no weights); status `pruned`
                                    when pruned
    <configuration>/seed<k>/        the confirm runs with the best learning rates
    report/                         mtexp-report on the confirm runs (after a multirun)

The study is named after the configuration (`study_name`) and lives in the storage file, so a
command started again after a crash carries on where it stopped (finished trials are kept;
`tune.trials` counts finished trials, completed or pruned), and several workers given the same
command and `hydra.sweep.dir` (or `tune.storage`) share one study: run them with
`tune.stage=search`, then once with `tune.stage=confirm`. A scenario that trains nothing
(`freezing=all`) is not tuned: its confirm runs run as configured.
"""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import optuna
import transformers
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf, open_dict

from mtexp.callbacks import Callback, extra_callbacks
from mtexp.config import RunConfig, validate
from mtexp.io import atomic_write_json
from mtexp.rundir import CHECKPOINT_DIR, MODEL_FILE, STATUS_FILE, RunDir, flatten
from mtexp.runlife import RunStopped
from mtexp.runlog import LOG_FORMAT
from mtexp.train import CONF_DIR, hydra_context, run

log = logging.getLogger("mtexp.tune")
STAGES = ("all", "search", "confirm")
PRUNERS = ("median", "none")
STORAGE_FILE = "tuning.db"
RECORD_FILE = "tuning.json"
TRIALS_DIR = "trials"
PRUNED = "pruned"  # status.json of a pruned trial's run directory
# Overrides that do not change what is measured: left out of the study's name.
NOT_CONFIGURATION = ("seed", "tune.", "hydra.", "hydra/", "paths.", "logger", "experiment",
                     "trainer.threads", "trainer.progress", "trainer.device", "trainer.resume")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass
class TuneConfig:
    """The `tune` node of conf/tune.yaml."""

    trials: int = 20  # finished trials (completed or pruned) per configuration
    seed: int = 1000  # the trials' seed: none of the confirm seeds, so no confirm run was selected
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # the confirm runs' seeds
    stage: str = "all"  # all | search (trials only) | confirm (best trial's confirm runs only)
    storage: str | None = None  # an Optuna storage URL; null: sqlite:///<sweep folder>/tuning.db
    study: str | None = None  # null: named after the configuration
    pruner: str = "median"  # median | none
    pruner_startup_trials: int = 3  # trials that finish before any is pruned
    pruner_warmup_epochs: int = 1  # epochs of each trial never pruned
    sampler_startup_trials: int = 5  # random trials before TPE models the results
    head_lr_max: float = 1e-2  # upper end of a head's own learning rate (split, per_task_heads)
    own_process: bool = True  # each confirm run in a fresh process: its peak memory is its own

    def __post_init__(self) -> None:
        checks = {
            "trials": (self.trials >= 0, ">= 0"),
            "seeds": (len(self.seeds) >= 1, "at least one seed"),
            "stage": (self.stage in STAGES, f"one of {STAGES}"),
            "pruner": (self.pruner in PRUNERS, f"one of {PRUNERS}"),
            "head_lr_max": (self.head_lr_max > 0, "> 0"),
        }
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"tune.{key} must be {expected}, got {getattr(self, key)!r}")
        self.seeds = [int(seed) for seed in self.seeds]


@dataclass(frozen=True)
class LogRange:
    """A learning rate searched log-uniformly in [low, high]."""

    low: float
    high: float

    def record(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": True}


def search_space(run: RunConfig, head_lr_max: float = 1e-2) -> dict[str, LogRange]:
    """The learning rates to search, by config key, in the scenario's `lr_range`.

    Presets with one learning rate (`adamw`, `llrd`, `discriminative`: layer decay kept) search
    `optim.lr`; presets that set the encoder's and the heads' apart (`split`, `per_task_heads`)
    search `optim.lr_encoder` and each head's (`optim.lr_head`, or each `optim.lr_heads` key),
    the heads' up to `head_lr_max`. With a frozen encoder only the heads' are searched; a
    scenario that trains nothing has none.
    """
    scenario = run.freezing.scenario
    if not scenario.anything_trains:
        return {}
    low, high = scenario.lr_range
    optim = run.optim
    head_keys = [f"optim.lr_heads.{task}" for task in optim.lr_heads] or ["optim.lr_head"]
    if not scenario.encoder_trains:
        return dict.fromkeys(head_keys, LogRange(low, high))
    if not optim.lr_heads and optim.lr_encoder == optim.lr_head:
        return {"optim.lr": LogRange(low, high)}
    head = LogRange(low, max(high, head_lr_max))
    return {"optim.lr_encoder": LogRange(low, high), **dict.fromkeys(head_keys, head)}


def parameter_overrides(params: dict[str, float]) -> dict[str, float]:
    """Config keys to set for `params`; `optim.lr` sets the encoder's and the heads' too."""
    keys: dict[str, float] = {}
    for key, value in params.items():
        keys[key] = value
        if key == "optim.lr":
            keys.update({"optim.lr_encoder": value, "optim.lr_head": value})
    return keys


def configuration(overrides: Sequence[str]) -> dict[str, str]:
    """The overrides that define a configuration, `{key: value}` sorted by key."""
    pairs = (item.lstrip("+~").split("=", 1) for item in overrides if "=" in item)
    return {key: value for key, value in sorted(pairs) if not key.startswith(NOT_CONFIGURATION)}


def study_name(config_name: str, overrides: Sequence[str]) -> str:
    """`<config name>: key=value ...` of the configuration's overrides (`configuration`)."""
    described = " ".join(f"{key}={value}" for key, value in configuration(overrides).items())
    return f"{config_name}: {described or 'defaults'}"


class TrialPruned(RunStopped, optuna.TrialPruned):
    """A trial the pruner stopped: Optuna counts it as pruned, its run directory says `pruned`."""

    status = PRUNED


class TrialReporter(Callback):
    """Reports each epoch's dev metric to an Optuna trial; ends the run when it is pruned."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> None:
        epoch = trainer.state.epoch
        self.trial.report(float(row[self.metric]), epoch)
        if self.trial.should_prune():
            raise TrialPruned(f"pruned after epoch {epoch}")


class Tuning:
    """One configuration: its study, its trials, its confirm runs and its record."""

    def __init__(self, cfg: DictConfig, folder: Path, sweep: Path, choices: dict[str, str],
                 overrides: Sequence[str], config_name: str = "tune") -> None:
        self.tune = TuneConfig(**OmegaConf.to_container(cfg.get("tune") or {}, resolve=True))
        self.base = copy.deepcopy(cfg)
        with open_dict(self.base):
            self.base.pop("tune", None)
        self.settings = validate(self.base)
        self.space = search_space(self.settings, self.tune.head_lr_max)
        self.folder, self.sweep = Path(folder), Path(sweep)
        self.choices = dict(choices)
        self.overrides = list(overrides)
        self.name = self.tune.study or study_name(config_name, overrides)
        self.metric = self.settings.trainer.early_stopping.metric
        self.maximize = self.settings.trainer.early_stopping.mode == "max"

    # ----- runs ---------------------------------------------------------------------------
    def run_config(self, params: dict[str, float], seed: int, resume: bool = False) -> DictConfig:
        cfg = copy.deepcopy(self.base)
        for key, value in parameter_overrides(params).items():
            OmegaConf.update(cfg, key, value, force_add=True)
        cfg.seed = seed
        if resume:
            cfg.trainer.resume = True
        return cfg

    def run_overrides(self, params: dict[str, float], seed: int) -> list[str]:
        keys = [f"{key}={value!r}" for key, value in parameter_overrides(params).items()]
        kept = [item for item in self.overrides if not item.lstrip("+~").startswith("seed=")]
        return [*kept, *keys, f"seed={seed}"]

    def train(self, run_dir: Path, params: dict[str, float], seed: int, resume: bool = False,
              own_process: bool = False) -> dict | None:
        """One run with `params` and `seed`: here (returns metrics.json) or in a fresh process."""
        runner = run_in_process if own_process else run
        return runner(self.run_config(params, seed, resume), run_dir, self.choices,
                      self.run_overrides(params, seed))

    def objective(self, trial: optuna.Trial) -> float:
        params = {key: trial.suggest_float(key, r.low, r.high, log=True) for key, r in self.space.items()}
        run_dir = self.folder / TRIALS_DIR / str(trial.number)
        try:
            with extra_callbacks(TrialReporter(trial, self.metric)):
                metrics = self.train(run_dir, params, self.tune.seed)
        finally:
            discard_weights(run_dir)
        return float(flatten(metrics)[self.metric])

    # ----- stages -------------------------------------------------------------------------
    def study(self) -> optuna.Study:
        with warnings.catch_warnings():  # heartbeats are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                self.tune.storage or f"sqlite:///{(self.sweep / STORAGE_FILE).resolve()}",
                engine_kwargs={"connect_args": {"timeout": 300}} if not self.tune.storage else None,
                heartbeat_interval=60, grace_period=600,  # a crashed worker's trial turns FAIL
            )
        sampler = optuna.samplers.TPESampler(seed=self.tune.seed,
                                             n_startup_trials=self.tune.sampler_startup_trials)
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
        if self.tune.pruner == "median":
            pruner = optuna.pruners.MedianPruner(n_startup_trials=self.tune.pruner_startup_trials,
                                                 n_warmup_steps=self.tune.pruner_warmup_epochs)
        return optuna.create_study(storage=storage, study_name=self.name, load_if_exists=True,
                                   direction="maximize" if self.maximize else "minimize",
                                   sampler=sampler, pruner=pruner)

    def search(self, study: optuna.Study) -> None:
        """Trials until `tune.trials` have finished, those of earlier or parallel workers counted."""
        left = self.tune.trials - len(study.get_trials(deepcopy=False, states=FINISHED))
        if left > 0:
            study.optimize(self.objective, n_trials=left,  # a trial that fails stops the search
                           callbacks=[optuna.study.MaxTrialsCallback(self.tune.trials, states=FINISHED)])

    def confirm(self, best: dict[str, float]) -> list[str]:
        """The best learning rates with every confirm seed; finished runs are kept, others resume."""
        names = []
        for seed in self.tune.seeds:
            run_dir = self.folder / f"seed{seed}"
            if RunDir(run_dir).read_status([]).get("status") != "completed":
                self.train(run_dir, best, seed, resume=True, own_process=self.tune.own_process)
            names.append(run_dir.name)
        return names

    def __call__(self) -> dict[str, Any]:
        """Search (stages all and search), record, confirm (stages all and confirm), record."""
        self.folder.mkdir(parents=True, exist_ok=True)
        study = self.study() if self.space else None
        if study is not None and self.tune.stage != "confirm":
            self.search(study)
        record = self.record(study)
        if self.tune.stage != "search":
            record["confirm"] = {"seeds": self.tune.seeds, "runs": self.confirm(record["best"])}
            self.write(record)
        return record

    # ----- the record ---------------------------------------------------------------------
    def record(self, study: optuna.Study | None) -> dict[str, Any]:
        trials = study.get_trials(deepcopy=False) if study is not None else []
        finished = [t for t in trials if t.state in FINISHED]
        completed = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
        if study is not None and not completed:
            raise RuntimeError(f"no trial of study {self.name!r} completed: see the status.json files "
                               f"under {self.folder / TRIALS_DIR}")
        best = study.best_trial if completed else None
        record = {
            "configuration": configuration(self.overrides),
            "choices": self.choices,
            "study": self.name if study is not None else None,
            "storage": STORAGE_FILE if study is not None and not self.tune.storage else None,
            "metric": self.metric,
            "trials": len(finished),
            "pruned": len(finished) - len(completed),
            "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
            "seconds": round(sum(trial_seconds(t) for t in trials), 1),
            "best": dict(best.params) if best is not None else {},
            "best_dev_score": best.value if best is not None else None,
            "best_trial": best.number if best is not None else None,
            "search_space": {key: r.record() for key, r in self.space.items()},
            "tuning_seed": self.tune.seed,
        }
        self.write(record)
        return record

    def write(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.folder / RECORD_FILE, record)


def discard_weights(run_dir: Path) -> None:
    """A trial keeps its record (config, metrics, history), not its weights and checkpoints."""
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    (run_dir / MODEL_FILE).unlink(missing_ok=True)


def run_in_process(cfg: DictConfig, run_dir: Path, choices: dict[str, str],
                   overrides: list[str]) -> None:
    """`mtexp.train.run` in a fresh (spawned) process, so that nothing an earlier run left in this
    one counts in its `cost.peak_memory_mb`."""
    spawn = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    process = spawn.Process(target=run_logged_at, args=(level, cfg, run_dir, choices, overrides))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the run in {run_dir} failed (exit code {process.exitcode}): see its status.json")


def run_logged_at(level: int, cfg: DictConfig, run_dir: Path, choices: dict[str, str],
                  overrides: list[str]) -> None:
    """`mtexp.train.run` logging at `level`: a spawned process starts with logging unconfigured
    (WARNING), and the run's INFO records would reach neither its train.log nor the console."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    run(cfg, run_dir, choices, overrides)


def trial_seconds(trial: optuna.trial.FrozenTrial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def read_record(folder: Path) -> dict[str, Any] | None:
    """A configuration folder's tuning.json; None when it has none."""
    path = Path(folder) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def confirm_runs(sweep: Path) -> list[Path]:
    """The confirm run directories under a tuning sweep folder (trials left out)."""
    return sorted(path.parent for path in Path(sweep).glob(f"*/seed*/{STATUS_FILE}"))


class TuneReportCallback(HydraCallback):
    """After a tuning multirun: mtexp-report on the confirm runs, into `<sweep folder>/report`,
    grouped by `by` (the swept groups: each configuration's tuned learning rates differ by design,
    so they should not split the groups), or as the report chooses when None."""

    def __init__(self, by: Sequence[str] | str | None = None) -> None:
        self.by = [by] if isinstance(by, str) else list(by) if by else None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mtexp.report import build_report

        sweep = Path(str(config.hydra.sweep.dir))
        try:
            written = build_report(confirm_runs(sweep), out=sweep / "report", by=self.by)
            log.info("mtexp report written to %s", written["report.html"].parent)
        except Exception:
            log.exception("mtexp report for the tuning sweep failed")


@hydra.main(config_path=CONF_DIR, config_name="tune", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    transformers.utils.logging.disable_progress_bar()
    folder, choices, overrides, multirun = hydra_context()
    hydra_cfg = HydraConfig.get()
    sweep = Path(hydra_cfg.sweep.dir) if multirun else folder
    try:
        record = Tuning(cfg, folder, sweep, choices, overrides, hydra_cfg.job.config_name)()
    except Exception:
        if not multirun:
            raise
        log.exception("tuning failed: %s", folder)  # one configuration must not stop the sweep
        return None
    print(json.dumps({k: record[k] for k in ("study", "trials", "pruned", "best", "best_dev_score")}))
    return record["best_dev_score"]


def main() -> None:
    hydra_main()


if __name__ == "__main__":
    sys.exit(main())
