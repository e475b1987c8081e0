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


# ----- the saved model: its weights, a config that rebuilds it, and its tokenizer -------------
MODEL_WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model.json"
TOKENIZER_DIR = "tokenizer"
MODEL_FORMAT = "mtexp-model"
MODEL_FORMAT_VERSION = 1
WORD_SPLITTING = "whitespace"  # how `predict` turns a sentence into words


class SavedModelError(ValueError):
    """A run directory without a usable saved model; the message names the path at fault."""


def model_config(model: torch.nn.Module) -> dict[str, Any]:
    """What rebuilds a `MultiTaskModel` without its training config: architecture, heads, tasks."""
    encoder = model.encoder
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "weights": MODEL_WEIGHTS_FILE,
        "tokenizer": TOKENIZER_DIR,
        "backbone": {
            "config": encoder.backbone.config.to_dict(),
            "pooling": encoder.pooling,
            "normalize": encoder.normalize,
            "max_length": encoder.max_length,
        },
        "heads": {"hidden": model.head_hidden, "dropout": model.head_dropout},
        "tasks": [
            {"name": task.name, "kind": task.kind, "labels": list(task.labels)}
            for task in model.tasks.values()
        ],
        "loss_weights": dict(model.loss_weights),
        "words": WORD_SPLITTING,
    }


def write_model(run_dir: Path, model: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    """`model.safetensors` (tensor names unchanged), `tokenizer/`, then `model.json`.

    `model.json` is written last, so a run directory that has it has the other two.
    """
    from mtexp.checkpoint import save_model

    run_dir = Path(run_dir)
    save_model(run_dir / MODEL_WEIGHTS_FILE, model, metadata)
    write_tokenizer(run_dir / TOKENIZER_DIR, model.encoder.tokenizer)
    atomic_write_json(run_dir / MODEL_CONFIG_FILE, model_config(model))


def write_tokenizer(folder: Path, tokenizer: Any) -> None:
    """`tokenizer.save_pretrained` into a temporary folder that then replaces `folder`."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        tokenizer.save_pretrained(str(temp))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(temp, folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def read_model_config(run_dir: str | Path) -> dict[str, Any]:
    """The run directory's `model.json`, checked; `SavedModelError` names what is missing."""
    import json

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SavedModelError(f"run directory not found: {run_dir}")
    path = run_dir / MODEL_CONFIG_FILE
    if not path.is_file():
        reason = _no_model_reason(run_dir)
        raise SavedModelError(f"{run_dir} holds no saved model: {MODEL_CONFIG_FILE} not found ({reason})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SavedModelError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise SavedModelError(f"{path} is not an mtexp model config (no \"format\": \"{MODEL_FORMAT}\")")
    if int(config.get("version", 0)) > MODEL_FORMAT_VERSION:
        raise SavedModelError(
            f"{path} has format version {config['version']}; this mtexp reads up to {MODEL_FORMAT_VERSION}"
        )
    for key in ("weights", "tokenizer"):
        if not (run_dir / config[key]).exists():
            raise SavedModelError(f"{run_dir} holds an incomplete model: {config[key]} not found")
    return config


def _no_model_reason(run_dir: Path) -> str:
    if (run_dir / MODEL_WEIGHTS_FILE).is_file():
        return f"its {MODEL_WEIGHTS_FILE} predates {MODEL_CONFIG_FILE}; train the run again to save both"
    if (run_dir / STATUS_FILE).is_file():
        return f"the run saves its model when it completes; see {STATUS_FILE}"
    return "not a run directory of mtexp-train"
