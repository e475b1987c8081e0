"""The run directory: the files every later tool reads, each written atomically."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import traceback
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from mtexp.io import atomic_write_json, atomic_write_text

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
REPO_ROOT = Path(__file__).resolve().parents[1]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_status(run_dir: Path, status: str, started: str, error: BaseException | None = None) -> None:
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
    atomic_write_json(run_dir / STATUS_FILE, payload)


def write_config(run_dir: Path, cfg: DictConfig, choices: dict[str, str], overrides: list[str]) -> None:
    """`config.yaml` fully resolved (no `${...}` left), plus the group choices and overrides."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(resolved, dict):
        resolved.pop("hydra", None)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_text(run_dir / "choices.yaml", yaml.safe_dump(choices, sort_keys=True))
    atomic_write_text(run_dir / "overrides.yaml", yaml.safe_dump(list(overrides)))


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


def write_environment(run_dir: Path, device: torch.device, world_size: int = 1) -> None:
    atomic_write_json(run_dir / "env.json", environment(device, world_size))
