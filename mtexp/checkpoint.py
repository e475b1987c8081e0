"""What checkpoints hold besides the model: the RNG state, and the fingerprint of what a resumed
run must share with the run that wrote them.

The fingerprint is every config key that decides what training computes: the data (sources,
splits, sampling, caps such as `data.max_train_examples`), the backbone and heads, the freezing
scenario, the optimizer and schedule, the seed, and the loop's budget (`trainer.epochs`,
`trainer.budget`, batch size, accumulation, clipping, precision, early stopping). Resuming under
a config that differs in any of them is refused, the differing keys named, before anything is
written (`check_resume`). Where checkpoints live and how they are written and read is
`mtexp.rundir`'s business.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtexp.config import ConfigError
from mtexp.rundir import LAST, RunDir

if TYPE_CHECKING:
    from mtexp.config import RunConfig

log = logging.getLogger(__name__)
# The `trainer` keys in the fingerprint; the rest (device, threads, progress, resume, ...) may change.
TRAINER_KEYS = ("epochs", "batch_size", "grad_accumulation", "max_grad_norm", "precision",
                "early_stopping", "budget")
# `data.cache_dir` only says where tokenised features are kept.
DATA_SKIP = ("cache_dir",)


class ResumeError(ConfigError):
    """A resume that would continue a different run; the message names the differing keys."""


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(run_dir: Path, name: str = LAST) -> dict[str, Any] | None:
    """The checkpoint `name` of the run directory `run_dir`; None when it has none."""
    return RunDir(run_dir).read_checkpoint(name)


# ----- the fingerprint -------------------------------------------------------------------------
def fingerprint(run: RunConfig) -> dict[str, Any]:
    """`{"data.max_train_examples": 200, "trainer.epochs": 3, ...}`: the keys a resume must keep."""
    trainer = {key: getattr(run.trainer, key) for key in TRAINER_KEYS}
    data = {field.name: getattr(run.data, field.name) for field in dataclasses.fields(run.data)
            if field.name not in DATA_SKIP}
    data["sources"] = [{"source": type(source).__name__, **_plain(source)} for source in run.data.sources]
    tree = {
        "seed": run.seed, "data": data, "backbone": run.backbone, "model": run.model,
        "freezing": run.freezing, "optim": run.optim, "schedule": run.schedule, "trainer": trainer,
    }
    return _flat(_plain(tree))


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`key (checkpoint: a, now: b)` for every key whose value differs, in key order."""
    missing = object()
    found = []
    for key in sorted(set(saved) | set(current)):
        before, now = saved.get(key, missing), current.get(key, missing)
        if before != now:
            found.append(f"{key} (checkpoint: {_shown(before, missing)}, now: {_shown(now, missing)})")
    return found


def check_resume(run: RunConfig, source: RunDir | None) -> None:
    """Raise `ResumeError` when `source`'s last checkpoint was written under a config that differs
    from `run` in a fingerprinted key. Nothing to check without a source or a checkpoint; a
    checkpoint older than fingerprints is resumed with a warning."""
    if source is None:
        return
    checkpoint = source.read_checkpoint(LAST, mmap=True)
    if checkpoint is None:
        log.info("%s holds no checkpoint yet: training starts from the beginning", source.path)
        return
    saved = checkpoint.get("fingerprint")
    if saved is None:
        log.warning("the checkpoint of %s predates config fingerprints: its config is not checked",
                    source.path)
        return
    found = differences(saved, fingerprint(run))
    if found:
        raise ResumeError(
            f"trainer.resume: the checkpoint of {source.path} was written under another config; "
            f"differing keys: {'; '.join(found)}. Resume with the checkpoint's values, or start a new "
            f"run (another hydra.run.dir, or trainer.overwrite=true)"
        )


def resume_labels(source: RunDir | None) -> dict[str, list[str]] | None:
    """The tasks and labels the checkpoint a run resumes from was trained on; None without one."""
    checkpoint = source.read_checkpoint(LAST, mmap=True) if source is not None else None
    return checkpoint.get("labels") if checkpoint is not None else None


def check_labels(saved: Mapping[str, list[str]] | None, current: Mapping[str, list[str]]) -> None:
    """The tasks and labels of the data match those the checkpoint was trained on."""
    if saved is None or dict(saved) == dict(current):
        return
    tasks = sorted(task for task in set(saved) | set(current) if saved.get(task) != current.get(task))
    raise ResumeError(f"trainer.resume: the data's tasks or labels differ from the checkpoint's "
                      f"(tasks {tasks}): the data files changed since the checkpoint was written")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        return {key: value for name, item in tree.items()
                for key, value in _flat(item, f"{prefix}{name}.").items()}
    if isinstance(tree, list) and tree and any(isinstance(item, (dict, list)) for item in tree):
        return {key: value for index, item in enumerate(tree)
                for key, value in _flat(item, f"{prefix}{index}.").items()}
    return {prefix.rstrip("."): tree}


def _shown(value: Any, missing: object) -> str:
    return "not set" if value is missing else repr(value)
