"""The life of a run in its directory: how it starts, and how every ending is recorded.

`RunLife` wraps one run (`mtexp.train.run`) in its locked directory:

- status.json exists from the first moment: a run that fails before it starts training (a
  config error included) leaves `failed` with the error, one stopped by SIGTERM or SIGINT
  `interrupted` (with a checkpoint at the step it stopped at, for `trainer.resume=true`);
- a directory that holds a run (completed, failed, interrupted or killed) is taken over only
  with `trainer.resume=true` (the run continues) or `trainer.overwrite=true` (the old run's
  files are removed first); until it is taken over, a failing or refused attempt changes
  nothing there, not a byte: the record of how the run was started (config.yaml, choices.yaml,
  overrides.yaml, Hydra's `.hydra/`) is written when the run takes the directory, and so is its
  log, `train.log` (`mtexp.runlog`: records are held until then);
- recording an ending never hides the error that ended the run: it is logged first, and a
  failure to write status.json (a full disk) is logged beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

from mtexp.config import ConfigError
from mtexp.interrupts import RunInterrupted, stop_on_termination
from mtexp.rundir import RunDir, now_iso, run_dirs_under
from mtexp.runlog import RunLog

__all__ = ["FAILED_RUNS", "RunDirTaken", "RunInterrupted", "RunLife", "RunRecord", "SweepOutcome",
           "ending_status", "stop_on_termination"]

log = logging.getLogger("mtexp.run")
INTERRUPTED, FAILED = "interrupted", "failed"


class RunDirTaken(ConfigError):
    """The run directory holds a run and the config neither resumes nor overwrites it."""


class RunStopped(Exception):
    """Ends a run early on purpose (e.g. a pruned tuning trial): status.json records `status`,
    and the log says so as information, not as a failure."""

    status = "stopped"


def ending_status(error: BaseException) -> str:
    """The stop's own status, `interrupted` for a signal or an exit requested from outside,
    else `failed`."""
    if isinstance(error, RunStopped):
        return error.status
    return INTERRUPTED if isinstance(error, (KeyboardInterrupt, SystemExit)) else FAILED


@dataclass(frozen=True)
class RunRecord:
    """How a run was started: the config as composed, the group choices, the command-line
    overrides, and, when Hydra started the run in its own output directory, Hydra's config of
    the job (`{"hydra": ...}`), kept in `.hydra/` as Hydra would keep it."""

    cfg: DictConfig
    choices: Mapping[str, str] = field(default_factory=dict)
    overrides: Sequence[str] = ()
    hydra: DictConfig | None = None

    def write(self, directory: RunDir) -> None:
        directory.write_config(self.cfg, self.choices, self.overrides)
        if self.hydra is not None:
            directory.write_hydra_record(self.cfg, self.hydra, self.overrides)


class RunLife:
    """One attempt at a run in `directory`; only the process that `writes` touches files.

    Use as a context manager around the run: `begin(...)` once every check that could refuse
    the run has passed, `complete()` at the end; an exception leaving the block is recorded
    (see the module)."""

    def __init__(self, directory: RunDir, record: RunRecord, writes: bool = True) -> None:
        self.directory = directory
        self.record = record
        self.writes = writes
        self.started = now_iso()
        self.had_run = directory.holds_run()
        self.begun = False
        self.log = RunLog()

    def __enter__(self) -> RunLife:
        if self.writes:
            self.log.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if error is not None:
                self.record_ending(error)
        finally:
            self.log.close()

    def check_takeover(self, resume: bool, overwrite: bool) -> None:
        """A directory that holds a run needs `trainer.resume=true` or `trainer.overwrite=true`."""
        if not self.had_run or resume or overwrite:
            return
        status = self.directory.read_status([]).get("status", "unknown")
        raise RunDirTaken(
            f"run directory {self.directory.path} holds a {status} run: set trainer.resume=true to "
            f"continue it, or trainer.overwrite=true to replace it (its files are removed first)"
        )

    def begin(self, overwrite: bool = False) -> None:
        """The run takes the directory: the old run's files go first under `overwrite`; then
        the log, status `running` and the record of how the run was started."""
        if self.writes and not self.begun:
            if overwrite and self.had_run:
                log.warning("trainer.overwrite=true: removing the previous run's files from %s",
                            self.directory.path)
                self.directory.remove_run_files()
            self._open_log()
            self.directory.write_status("running", self.started)
            self.record.write(self.directory)
        self.begun = True

    def complete(self) -> None:
        if self.writes:
            self.directory.write_status("completed", self.started)

    def record_ending(self, error: BaseException) -> None:
        """status.json says how the run ended, unless the directory still belongs to an
        earlier run (then it is left as it was). The error is logged before anything is written."""
        if not self.writes:
            return
        status = ending_status(error)
        if not self.begun and self.had_run:
            log.error("the run did not start; %s is left as it was: %s", self.directory.path, error)
            return
        if not self.begun:
            self._open_log()  # a new directory: its log says why the run ended
        level = logging.INFO if isinstance(error, RunStopped) else logging.ERROR
        log.log(level, "run %s: %s", status, f"{type(error).__name__}: {error}")
        try:
            self.directory.write_status(status, self.started, error)
            if not self.begun:
                self._write_record_if_possible()
        except OSError as write_error:
            log.error("could not record the ending in %s (%s: %s); the run ended with: %s: %s",
                      self.directory.path, type(write_error).__name__, write_error,
                      type(error).__name__, error)

    def _open_log(self) -> None:
        try:
            self.log.open(self.directory.log_file)
        except OSError as error:  # the run goes on; its records still reach the console
            log.warning("could not open the run's log %s: %s", self.directory.log_file, error)

    def _write_record_if_possible(self) -> None:
        """A config that failed validation may not resolve: written only where it does."""
        try:
            self.record.write(self.directory)
        except OSError:
            raise
        except Exception as config_error:  # an unresolvable interpolation, for one
            log.debug("config.yaml not written: %s", config_error)


# ----- multiruns ------------------------------------------------------------------------------
# Run directories of the failed jobs of this process's multirun (`mtexp.train.hydra_main` adds
# those it ran; `SweepOutcome` those of other processes).
FAILED_RUNS: list[str] = []


class SweepOutcome(HydraCallback):
    """After a multirun: the jobs that did not complete, from this process and from the statuses
    the sweep's jobs wrote (other launchers run jobs elsewhere); `main` then exits non-zero.
    Registered in conf/config.yaml; Hydra calls it when every job has returned. It lives here,
    not in `mtexp.train`, which runs as `__main__` under `python -m`: one list for both."""

    def __init__(self) -> None:
        self.started = now_iso()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = now_iso()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        for folder in run_dirs_under(sweep_dir) if sweep_dir.is_dir() else []:
            status = RunDir(folder).read_status([])
            ended_here = str(status.get("started", "")) >= self.started
            if ended_here and status.get("status") != "completed" and str(folder) not in FAILED_RUNS:
                FAILED_RUNS.append(str(folder))
