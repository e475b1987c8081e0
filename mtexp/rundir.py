"""The run directory: the names of its files, and the one place that writes and reads them.

Training writes every file atomically (`RunDir.write_*`); the tools that read run directories
(`mtexp.results`, `sweeps/publish.py`) go through `RunDir.read_*`, which read leniently: a missing
file is `None`, a corrupt one a note in `problems`, never an exception. The saved model
(`write_model`, `read_model_config`, `SavedModelError`) is `mtexp.savedmodel`'s; its names stay
importable from here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import traceback
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from mtexp.io import atomic_save, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from mtexp.data.types import TaskSpec

CONFIG_FILE = "config.yaml"
CHOICES_FILE = "choices.yaml"
OVERRIDES_FILE = "overrides.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
STEPS_FILE = "steps.csv"
ENV_FILE = "env.json"
LABELS_FILE = "labels.json"
MODEL_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoints"
ADAPTER_DIR = "adapter"  # `freezing=lora`: the unmerged adapters in peft's format
LAST = "last.pt"
BEST = "best.pt"
# TensorBoard event files of `logger=tensorboard`.
TENSORBOARD_DIR = "tensorboard_logs"
# Hydra's own record of the job (written by the run once it holds its directory, as Hydra would
# write it): read when config.yaml, choices.yaml or overrides.yaml is missing.
HYDRA_DIR = ".hydra"
HYDRA_CONFIG_FILE = "hydra.yaml"
# Held while a run lives (`mtexp.runlock`): its pid, host and start.
LOCK_FILE = ".lock"
# The run's log (`mtexp.runlog`), appended to by every attempt that takes the directory.
LOG_FILE = "train.log"
# Any of these makes a folder a run directory.
RUN_MARKERS = (STATUS_FILE, METRICS_FILE, HYDRA_DIR)
# Left out of a published copy: weights (adapters too), tokenizer and checkpoints (large), Hydra's
# folder, logs and event files (local paths, host names).
UNPUBLISHED = (CHECKPOINT_DIR, MODEL_FILE, ADAPTER_DIR, TOKENIZER_DIR, HYDRA_DIR, "*.log", TENSORBOARD_DIR,
               LOCK_FILE)
# What a run writes into its directory (Hydra's record and the log included): removed before
# `trainer.overwrite=true` trains anew.
RUN_FILES = (STATUS_FILE, METRICS_FILE, HISTORY_FILE, STEPS_FILE, CONFIG_FILE, CHOICES_FILE, OVERRIDES_FILE,
             ENV_FILE, LABELS_FILE, MODEL_FILE, MODEL_CONFIG_FILE, CHECKPOINT_DIR, ADAPTER_DIR, TOKENIZER_DIR,
             TENSORBOARD_DIR, HYDRA_DIR, LOG_FILE)
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RunDir:
    """One run directory: the paths of its files, their writers and their readers."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ----- paths ----------------------------------------------------------------------------
    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    def checkpoint_file(self, name: str = LAST) -> Path:
        return self.path / CHECKPOINT_DIR / name

    # ----- writers --------------------------------------------------------------------------
    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write_status(self, status: str, started: str, error: BaseException | None = None) -> None:
        """`running`, then `completed`, or `failed` / `interrupted` with the exception and its
        traceback."""
        payload: dict[str, Any] = {
            "status": status,
            "started": started,
            "ended": None if status == "running" else now_iso(),
            "error": None,
            "traceback": None,
        }
        if error is not None:
            payload["error"] = f"{type(error).__name__}: {error}"
            payload["traceback"] = "".join(traceback.format_exception(error))
        atomic_write_json(self.path / STATUS_FILE, payload)

    def write_config(self, cfg: DictConfig, choices: Mapping[str, str], overrides: Iterable[str]) -> None:
        """The config fully resolved (no `${...}` left), plus the group choices and overrides."""
        resolved = OmegaConf.to_container(cfg, resolve=True)
        if isinstance(resolved, dict):
            resolved.pop("hydra", None)
        atomic_write_text(self.path / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=False))
        atomic_write_text(self.path / CHOICES_FILE, yaml.safe_dump(dict(choices), sort_keys=True))
        atomic_write_text(self.path / OVERRIDES_FILE, yaml.safe_dump(list(overrides)))

    def write_hydra_record(self, task: DictConfig, hydra: DictConfig, overrides: Iterable[str]) -> None:
        """`.hydra/`: the job's config, Hydra's own config (`{"hydra": ...}`) and the command-line
        overrides, unresolved, as Hydra writes them."""
        folder = self.path / HYDRA_DIR
        atomic_write_text(folder / CONFIG_FILE, OmegaConf.to_yaml(task))
        atomic_write_text(folder / HYDRA_CONFIG_FILE, OmegaConf.to_yaml(hydra))
        atomic_write_text(folder / OVERRIDES_FILE, OmegaConf.to_yaml(OmegaConf.create(list(overrides))))

    def write_environment(self, device: torch.device, world_size: int = 1, **extra: Any) -> None:
        atomic_write_json(self.path / ENV_FILE, {**environment(device, world_size), **extra})

    def write_labels(self, tasks: Iterable[TaskSpec]) -> None:
        """Each task's label names, in the order of the model's outputs."""
        atomic_write_json(self.path / LABELS_FILE, {task.name: list(task.labels) for task in tasks})

    def write_history(self, history: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
        """One row per epoch; one per logged step (only when steps were logged)."""
        atomic_write_text(self.history_file, pd.DataFrame(history).to_csv(index=False))
        if steps:
            atomic_write_text(self.path / STEPS_FILE, pd.DataFrame(steps).to_csv(index=False))

    def write_metrics(self, metrics: Mapping[str, Any]) -> None:
        atomic_write_json(self.metrics_file, metrics)

    def write_checkpoint(self, name: str, payload: dict[str, Any]) -> Path:
        """`checkpoints/<name>`; a failed write (torch reports a full disk as a RuntimeError)
        raises `CheckpointError` naming the file, the old checkpoint left in place."""
        path = self.checkpoint_file(name)
        try:
            atomic_save(path, lambda temp: torch.save(payload, temp))
        except (OSError, RuntimeError) as error:
            raise CheckpointError(f"could not write checkpoint {path}: {type(error).__name__}: "
                                  f"{_first_line(error)}") from error
        return path

    # ----- readers --------------------------------------------------------------------------
    def read_checkpoint(self, name: str = LAST, mmap: bool = False) -> dict[str, Any] | None:
        """The checkpoint `name`; None when absent; `CheckpointError` naming it when unreadable.
        With `mmap` the tensors are mapped from the file, not read (a cheap look inside)."""
        path = self.checkpoint_file(name)
        if not path.is_file():
            return None
        try:
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                # not a zip-format file: read it whole, so that the error says what is wrong
                checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # torch raises several kinds for a damaged file
            raise CheckpointError(f"checkpoint {path} is unreadable ({type(error).__name__}: "
                                  f"{_first_line(error)})") from error
        if not isinstance(checkpoint, dict):
            raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict")
        return checkpoint

    def holds_run(self) -> bool:
        """A run has written here before (its status or its metrics)."""
        return (self.path / STATUS_FILE).is_file() or self.metrics_file.is_file()

    def remove_run_files(self) -> None:
        """Every file and folder a run writes (`RUN_FILES`)."""
        for name in RUN_FILES:
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def read_status(self, problems: list[str]) -> dict[str, Any]:
        return read_document(self.path / STATUS_FILE, problems, dict) or {}

    def read_metrics(self, problems: list[str]) -> dict[str, Any] | None:
        return read_document(self.metrics_file, problems, dict)

    def read_config(self, problems: list[str]) -> dict[str, Any]:
        """config.yaml, else Hydra's copy; `{}` when neither reads."""
        config = read_document(self.path / CONFIG_FILE, problems, dict)
        if config is None:
            config = read_document(self.path / HYDRA_DIR / CONFIG_FILE, problems, dict) or {}
        return config

    def read_overrides(self, problems: list[str]) -> list[Any]:
        """overrides.yaml, else Hydra's copy; `[]` when neither reads."""
        overrides = read_document(self.path / OVERRIDES_FILE, problems, list)
        if overrides is None:
            overrides = read_document(self.path / HYDRA_DIR / OVERRIDES_FILE, problems, list) or []
        return overrides

    def read_choices(self, problems: list[str]) -> dict[str, Any]:
        """choices.yaml, else the runtime choices Hydra recorded (its own groups included)."""
        choices = read_document(self.path / CHOICES_FILE, problems, dict)
        if choices is None:
            hydra_cfg = read_document(self.path / HYDRA_DIR / HYDRA_CONFIG_FILE, problems, dict) or {}
            choices = hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices", {}) or {}
        return choices

    def read_history(self) -> pd.DataFrame | None:
        """history.csv; None when absent (a corrupt file raises, as `pd.read_csv` does)."""
        if not self.history_file.is_file():
            return None
        return pd.read_csv(self.history_file)

    def read_environment(self) -> dict[str, Any] | None:
        path = self.path / ENV_FILE
        return json.loads(path.read_text()) if path.is_file() else None


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names its path."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def read_document(path: Path, problems: list[str], kind: type) -> Any:
    """Parse a JSON or YAML file; None when absent; a problem note (not an exception) when corrupt."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        problems.append(f"{path.name}: unreadable ({type(err).__name__}: {str(err)[:120]})")
        return None
    if not isinstance(doc, kind):
        problems.append(f"{path.name}: expected a {kind.__name__}, got {type(doc).__name__}")
        return None
    return doc


def run_dirs_under(root: Path) -> list[Path]:
    """Every folder under `root` that holds a status.json (what training always writes first)."""
    return sorted(path.parent for path in root.rglob(STATUS_FILE))


def flatten(
    tree: Mapping[str, Any], prefix: str = "", *, skip: Collection[str] = (), scalars_only: bool = False
) -> dict[str, Any]:
    """`{"intent": {"accuracy": 1}}` -> `{"<prefix>intent.accuracy": 1}`: the column names of the
    run directory's nested documents.

    By default every leaf is kept, lists as JSON strings so that table cells stay hashable. With
    `scalars_only` only numbers and None are kept; keys in `skip` are left out at any depth.
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if key in skip:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}.", skip=skip, scalars_only=scalars_only))
        elif scalars_only:
            if isinstance(value, (int, float)) or value is None:
                flat[name] = value
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_revision(root: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """The project's commit and whether its tracked files differ from it."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    revision = git("rev-parse", "HEAD")
    if revision is None:
        return None, None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return revision, bool(dirty)


def environment(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """What env.json records: versions, git revision, machine, device and threads."""
    import hydra
    import transformers

    revision, dirty = git_revision()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "hydra": hydra.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "git_revision": revision,
        "git_dirty": dirty,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "world_size": world_size,
    }


# The saved model lives in `mtexp.savedmodel` (which imports this module's file names); its public
# names are still importable from here.
SAVED_MODEL_NAMES = ("SavedModelError", "model_config", "portable_config", "read_model_config",
                     "write_model", "write_tokenizer", "MODEL_FORMAT", "MODEL_FORMAT_VERSION",
                     "WORD_SPLITTING")


def __getattr__(name: str) -> Any:
    if name in SAVED_MODEL_NAMES:
        from mtexp import savedmodel

        return getattr(savedmodel, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
