"""MLflow runs, nested under one parent run per sweep (`logger=mlflow`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mtexp.callbacks import resume_source
from mtexp.config import LoggerConfig, RunConfig
from mtexp.rundir import HISTORY_FILE, METRICS_FILE, STEPS_FILE, RunDir
from mtexp.trackers.base import Tracker, TrackerError, require_package, resolved_config, run_tags

log = logging.getLogger(__name__)
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
