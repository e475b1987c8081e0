"""The saved model of a run directory: its weights, a config that rebuilds it, and its tokenizer.

`write_model` writes `model.safetensors`, `tokenizer/` and, last, `model.json`, which says how to
rebuild the model without the training config (`mtexp.predict.load_model` reads it back through
`read_model_config`). The file names are `mtexp.rundir`'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mtexp.io import atomic_save_folder, atomic_write_json
from mtexp.rundir import MODEL_CONFIG_FILE, MODEL_FILE, STATUS_FILE, TOKENIZER_DIR
from mtexp.weights import save_weights

MODEL_FORMAT = "mtexp-model"
MODEL_FORMAT_VERSION = 1
WORD_SPLITTING = "whitespace"  # how `predict` turns a sentence into words


class SavedModelError(ValueError):
    """A run directory without a usable saved model; the message names the path at fault."""


def portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A backbone config without `_name_or_path`: where it was loaded from on this machine is not
    part of the architecture, and a shared run directory must not carry local paths."""
    return {key: value for key, value in config.items() if key != "_name_or_path"}


def model_config(model: torch.nn.Module) -> dict[str, Any]:
    """What rebuilds a `MultiTaskModel` without its training config: architecture, heads, tasks."""
    encoder = model.encoder
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "weights": MODEL_FILE,
        "tokenizer": TOKENIZER_DIR,
        "backbone": {
            "config": portable_config(encoder.backbone.config.to_dict()),
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
    run_dir = Path(run_dir)
    save_weights(run_dir / MODEL_FILE, model, metadata)
    write_tokenizer(run_dir / TOKENIZER_DIR, model.encoder.tokenizer)
    atomic_write_json(run_dir / MODEL_CONFIG_FILE, model_config(model))


def write_tokenizer(folder: Path, tokenizer: Any) -> None:
    """`tokenizer.save_pretrained` into a temporary folder that then replaces `folder`."""
    atomic_save_folder(folder, lambda temp: tokenizer.save_pretrained(str(temp)))


def read_model_config(run_dir: str | Path) -> dict[str, Any]:
    """The run directory's `model.json`, checked; `SavedModelError` names what is missing."""
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
    if (run_dir / MODEL_FILE).is_file():
        return f"its {MODEL_FILE} predates {MODEL_CONFIG_FILE}; train the run again to save both"
    if (run_dir / STATUS_FILE).is_file():
        return f"the run saves its model when it completes; see {STATUS_FILE}"
    return "not a run directory of mtexp-train"
