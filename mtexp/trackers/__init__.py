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

from collections.abc import Sequence

from mtexp.config import RunConfig
from mtexp.rundir import RunDir
from mtexp.trackers.base import Tracker, TrackerError
from mtexp.trackers.mlflow import MlflowTracker
from mtexp.trackers.tensorboard import TensorBoardTracker

__all__ = ["MlflowTracker", "TensorBoardTracker", "Tracker", "TrackerError", "make_trackers"]


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

