"""What every tracker shares: the values it logs (see `mtexp.trackers`), the config and tags it
attaches, and the error a tracker that cannot start raises."""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from mtexp.callbacks import Callback, step_row
from mtexp.config import GROUP_SCHEMAS, RunConfig
from mtexp.rundir import RunDir, flatten, git_revision

if TYPE_CHECKING:
    from mtexp.trainer import Trainer

INSTALL = "pip install 'mtexp[trackers]' (or pip install '{requirement}')"
AXES = ("epoch", "step")  # the x axis of a row, not a value



class TrackerError(RuntimeError):
    """A tracker that cannot start: its package is missing or its store cannot be reached."""



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
