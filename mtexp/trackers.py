"""Experiment trackers as training callbacks: TensorBoard event files and MLflow runs.

`logger.name` picks them (`tensorboard`, `mlflow`, or several joined by `+`). A tracker connects
when it is made, before any data loads, so that a missing package or a tracking server that
cannot be reached fails the run at its start, with a message that says what to fix. Both log
the same values under the same names:

- `step/<steps.csv column>`: each task's loss and each group's learning rate, every
  `logger.every_steps` optimizer steps (step = the optimizer step);
- `epoch/<history.csv column>`: the epoch's history row (step = the epoch);
- `final/<metrics.json key>`: metrics.json flattened, numbers only (step = the epochs run);
- the resolved config (config.yaml) flattened, as hparams (TensorBoard) or params (MLflow).

Only the main process tracks (`default_callbacks` makes trackers on rank 0 alone).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from mtexp.callbacks import Callback, resume_source, step_row
from mtexp.config import GROUP_SCHEMAS, LoggerConfig, RunConfig
from mtexp.rundir import (
    HISTORY_FILE,
    METRICS_FILE,
    STEPS_FILE,
    TENSORBOARD_DIR,
    RunDir,
    flatten,
    git_revision,
)

if TYPE_CHECKING:
    from mtexp.trainer import Trainer

log = logging.getLogger(__name__)
INSTALL = "pip install 'mtexp[trackers]' (or pip install '{requirement}')"
AXES = ("epoch", "step")  # the x axis of a row, not a value


class TrackerError(RuntimeError):
    """A tracker that cannot start: its package is missing or its store cannot be reached."""


def make_trackers(run: RunConfig, run_dir: RunDir, names: Sequence[str]) -> list[Tracker]:
    """The trackers `names` asks for, each connected; when one fails, those made before it end."""
    makers = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}
    trackers: list[Tracker] = []
    try:
        for name in names:
            if name in makers:
                trackers.append(makers[name](run, run_dir))
    except BaseException as error:
        for tracker in trackers:
            tracker.close(error)
        raise
    return trackers


def require_package(module: str, requirement: str, logger: str) -> Any:
    """Import `module`, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise TrackerError(
            f"logger={logger} needs the {requirement.split('>')[0]} package, which is not installed "
            f"({error}): {INSTALL.format(requirement=requirement)}"
        ) from None


def scalars(row: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The numbers of `row` (no bools, no None, no axis columns) under `prefix`."""
    return {
        f"{prefix}{key}": float(value) for key, value in row.items()
        if key not in AXES and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def resolved_config(run: RunConfig, run_dir: RunDir) -> dict[str, Any]:
    """The run's config.yaml flattened (`{"trainer.epochs": 2, ...}`); the typed config when the
    run directory has none."""
    config = run_dir.read_config([])
    if not config:
        config = {"seed": run.seed, "data": OmegaConf.to_container(run.data, resolve=True)}
        config.update({group: dataclasses.asdict(getattr(run, group)) for group in GROUP_SCHEMAS})
    return flatten(config)


def run_tags(run: RunConfig, run_dir: RunDir) -> dict[str, str]:
    """The config group choices (freezing, optim, ...), the seed and the git revision."""
    tags = {group: str(option) for group, option in run_dir.read_choices([]).items()
            if not str(group).startswith("hydra")}
    tags["seed"] = str(run.seed)
    revision, dirty = git_revision()
    if revision is not None:
        tags.update(git_revision=revision, git_dirty=str(dirty))
    return tags


class Tracker(Callback):
    """Logs steps, epochs and the final metrics under the names of this module's docstring."""

    def __init__(self, run: RunConfig, run_dir: RunDir) -> None:
        self.run = run
        self.run_dir = run_dir
        self.every_steps = run.logger.every_steps

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        raise NotImplementedError

    def close(self, error: BaseException | None) -> None:
        """End the tracked run: completed when `error` is None."""
        raise NotImplementedError

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.state.step % self.every_steps == 0:
            self.log_scalars(scalars(step_row(trainer), "step/"), trainer.state.step)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.log_scalars(scalars(row, "epoch/"), int(row["epoch"]))

    def on_run_end(self, run_dir: RunDir, error: BaseException | None) -> None:
        if error is None:
            metrics = json.loads(run_dir.metrics_file.read_text())
            final = scalars(flatten(metrics, scalars_only=True), "final/")
            self.log_scalars(final, int(metrics.get("epochs_run", 0)))
        self.close(error)


# ----- TensorBoard ------------------------------------------------------------------------------
class TensorBoardTracker(Tracker):
    """Event files in `<run>/tensorboard_logs`: scalars, and the config as hparams of the same run, so
    that TensorBoard's HParams tab lists every run of `--logdir` with its config and metrics."""

    requirement = "tensorboard>=2.14,<3"

    def __init__(self, run: RunConfig, run_dir: RunDir) -> None:
        super().__init__(run, run_dir)
        require_package("tensorboard", self.requirement, "tensorboard")
        self.writer_class = require_package("torch.utils.tensorboard", self.requirement,
                                            "tensorboard").SummaryWriter
        self.log_dir = run_dir.path / TENSORBOARD_DIR  # made by the writer, once training starts
        self.writer: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        """A resumed run drops what its first attempt logged after the checkpoint it resumes."""
        resumed_at = trainer.state.step
        self.open(purge_step=resumed_at + 1 if resumed_at else None)

    def open(self, purge_step: int | None = None) -> Any:
        """The event file's writer, opened with the config as hparams on first use."""
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(self.log_dir), purge_step=purge_step)
            config = resolved_config(self.run, self.run_dir)
            self.writer.file_writer.add_summary(session_start_summary(config))
        return self.writer

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        writer = self.open()
        for tag, value in values.items():
            writer.add_scalar(tag, value, global_step=step)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        super().on_epoch_end(trainer, row)
        self.open().flush()

    def close(self, error: BaseException | None) -> None:
        if self.writer is None:
            return
        self.writer.file_writer.add_summary(session_end_summary(failed=error is not None))
        self.writer.close()
        self.writer = None


def session_start_summary(config: Mapping[str, Any]) -> Any:
    """The hparams plugin's session start: the config's values (None as "None", bools as bools)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for key, value in config.items():
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[key].number_value = value
        else:
            info.hparams[key].string_value = str(value)
    return hparams_summary("session_start_info", plugin_data_pb2.HParamsPluginData(session_start_info=info))


def session_end_summary(failed: bool) -> Any:
    """The hparams plugin's session end, with the run's status."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    status = api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS
    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return hparams_summary("session_end_info", plugin_data_pb2.HParamsPluginData(session_end_info=info))


def hparams_summary(kind: str, data: Any) -> Any:
    """A summary the HParams tab reads (tag `_hparams_/<kind>`); built from the protocol buffers
    alone, as `tensorboard.plugins.hparams.summary` needs TensorFlow."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata

    data.version = metadata.PLUGIN_DATA_VERSION
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    value = Summary.Value(tag=f"_hparams_/{kind}", metadata=SummaryMetadata(plugin_data=plugin))
    return Summary(value=[value])


# ----- MLflow -----------------------------------------------------------------------------------
MLFLOW_DB_FILE = "mlflow.db"
RUN_DIR_TAG = "mtexp.run_dir"
SWEEP_DIR_TAG = "mtexp.sweep_dir"
PARENT_LOCK = ".mlflow-parent.lock"
LOCK_TIMEOUT_SECONDS = 120
# While connecting: one try, a short timeout (MLflow's defaults retry for minutes).
PROBE_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def hydra_dirs() -> tuple[Path, Path | None]:
    """Where the command was started (the output root, which holds outputs/ and multirun/), and
    the sweep directory in a multirun; the working directory and None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return Path.cwd().resolve(), None
    hydra_cfg = HydraConfig.get()
    root = Path(hydra_cfg.runtime.cwd).resolve()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return root, None
    return root, (root / str(hydra_cfg.sweep.dir)).resolve()


def tracking_uri(logger: LoggerConfig, root: Path) -> tuple[str, str]:
    """The tracking URI and where it came from: `logger.tracking_uri`, else $MLFLOW_TRACKING_URI,
    else an SQLite file at the output root."""
    if logger.tracking_uri:
        return logger.tracking_uri, "logger.tracking_uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
    return f"sqlite:///{(root / MLFLOW_DB_FILE).resolve()}", "the default, at the output root"


def sqlite_file(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]).resolve() if uri.startswith(prefix) else None


@contextmanager
def file_lock(path: Path | None) -> Iterator[None]:
    """An inter-process lock on `path` (none when `path` is None)."""
    if path is None:
        yield
        return
    from filelock import FileLock

    with FileLock(str(path), timeout=LOCK_TIMEOUT_SECONDS):
        yield


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set in os.environ inside the block, restored after it."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tag_filter(key: str, value: str) -> str | None:
    """An MLflow search filter matching tag `key` == `value` (None when it cannot be quoted)."""
    return None if "'" in value else f"tags.`{key}` = '{value}'"


class MlflowTracker(Tracker):
    """One MLflow run per run directory, named after it; in a multirun nested under one parent run
    per sweep directory. A failure to log during training is logged as a warning, once, and the run
    goes on: its run directory keeps every record."""

    requirement = "mlflow>=3,<4"

    def __init__(self, run: RunConfig, run_dir: RunDir) -> None:
        super().__init__(run, run_dir)
        require_package("mlflow", self.requirement, "mlflow")
        self.root, self.sweep_dir = hydra_dirs()
        self.uri, source = tracking_uri(run.logger, self.root)
        self.parent_id: str | None = None
        self.failed = False
        try:
            with environment(PROBE_ENVIRONMENT):
                self.connect(run.logger.experiment)
                self.run_id = self.start_run()
        except Exception as error:
            raise TrackerError(
                f"logger=mlflow cannot use the MLflow tracking store {self.uri} (set by {source}): "
                f"{type(error).__name__}: {str(error).strip()[:500]}. Start the tracking server, or set "
                "logger.tracking_uri (or MLFLOW_TRACKING_URI) to a store that can be reached."
            ) from None

    def connect(self, experiment: str) -> None:
        """The client and the experiment, created if new (one process at a time on an SQLite file:
        a new database is set up by the first)."""
        from mlflow import MlflowClient

        database = sqlite_file(self.uri)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(None if database is None else database.with_name(f".{database.name}.lock")):
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                artifacts = None if database is None else (database.parent / "mlruns").as_uri()
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
            else:
                self.experiment_id = found.experiment_id

    def find_run(self, key: str, value: str) -> str | None:
        query = tag_filter(key, value)
        if query is None:
            return None
        found = self.client.search_runs([self.experiment_id], query, max_results=1)
        return found[0].info.run_id if found else None

    def start_run(self) -> str:
        """A new run, or the run of this directory when the run resumes its own checkpoint."""
        run_dir = str(self.run_dir.path.resolve())
        if self.sweep_dir is not None:
            self.parent_id = self.sweep_parent(self.sweep_dir)
        resuming = resume_source(self.run.trainer.resume, self.run_dir) == self.run_dir
        run_id = self.find_run(RUN_DIR_TAG, run_dir) if resuming else None
        tags = {**run_tags(self.run, self.run_dir), RUN_DIR_TAG: run_dir}
        if tags.get("git_revision"):
            tags["mlflow.source.git.commit"] = tags["git_revision"]
        if self.parent_id is not None:
            tags["mlflow.parentRunId"] = self.parent_id
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, run_name=self.run_dir.path.name,
                                            tags=tags).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.log_params(run_id)
        return run_id

    def sweep_parent(self, sweep_dir: Path) -> str:
        """The sweep's parent run; the first job makes it, under a lock in the sweep directory so
        that parallel jobs find the one parent."""
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(sweep_dir / PARENT_LOCK):
            parent = self.find_run(SWEEP_DIR_TAG, str(sweep_dir))
            if parent is None:
                name = str(sweep_dir.relative_to(self.root)) if sweep_dir.is_relative_to(self.root) else None
                created = self.client.create_run(self.experiment_id, run_name=name or str(sweep_dir),
                                                 tags={SWEEP_DIR_TAG: str(sweep_dir)})
                parent = created.info.run_id
        self.client.update_run(parent, status="RUNNING")
        return parent

    def log_params(self, run_id: str) -> None:
        """The resolved config flattened; a resumed run keeps the values it logged first."""
        from mlflow.entities import Param

        logged = self.client.get_run(run_id).data.params
        params = [Param(key, str(value)) for key, value in resolved_config(self.run, self.run_dir).items()
                  if key not in logged]
        if params:
            self.client.log_batch(run_id, params=params)

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        self.guarded(lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def guarded(self, action: Any) -> None:
        if self.failed:
            return
        try:
            action()
        except Exception as error:  # the tracker is a copy of the record: training goes on
            self.failed = True
            log.warning("MLflow logging to %s failed, no more is logged there (%s: %s); the run "
                        "directory keeps every record", self.uri, type(error).__name__, error)

    def close(self, error: BaseException | None) -> None:
        def finish() -> None:
            if error is None:
                for name in (METRICS_FILE, HISTORY_FILE, STEPS_FILE):
                    if (self.run_dir.path / name).is_file():
                        self.client.log_artifact(self.run_id, str(self.run_dir.path / name))
            else:
                self.client.set_tag(self.run_id, "error", f"{type(error).__name__}: {error}"[:5000])
            self.client.set_terminated(self.run_id, run_status(error))
            if self.parent_id is not None:
                self.client.set_terminated(self.parent_id, "FINISHED")

        self.failed = False  # ending the run is worth a try even after a failed log call
        self.guarded(finish)


def run_status(error: BaseException | None) -> str:
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
