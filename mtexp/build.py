"""Assembling a run from its config: the device, the data and its features, the model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from mtexp.backbones import BUNDLED_NAMES, bundled_model_path
from mtexp.config import ConfigError, RunConfig, check_task_names
from mtexp.data import MultiTaskData, load_data
from mtexp.data.features import Features, build_features
from mtexp.encoder import SentenceEncoder
from mtexp.model import MultiTaskModel
from mtexp.seeding import seed_everything


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but no CUDA device is available")
    return torch.device(name)


def load_data_checked(run: RunConfig) -> MultiTaskData:
    """The run's data; config keys that name tasks are checked against it before any training."""
    seed_everything(run.seed)
    data = load_data(run.data, seed=run.seed)
    check_task_names(run, [task.name for task in data.tasks])
    return data


def build_run_features(run: RunConfig, data: MultiTaskData, tokenizer) -> Features:
    return build_features(
        data, tokenizer, run.backbone.max_length,
        label_all_tokens=run.data.label_all_tokens, cache_dir=run.data.cache_dir,
    )


def build_encoder(run: RunConfig) -> SentenceEncoder:
    backbone = run.backbone
    if backbone.random_init:
        return SentenceEncoder.random_init(
            num_layers=backbone.num_layers,
            hidden_size=backbone.hidden_size,
            num_heads=backbone.num_heads,
            intermediate_size=backbone.intermediate_size,
            seed=run.seed,
            pooling=backbone.pooling,
            max_length=backbone.max_length,
            tokenizer_source=backbone.name_or_path,
        )
    return SentenceEncoder.from_pretrained(
        backbone.name_or_path,
        pooling=backbone.pooling,
        max_length=backbone.max_length,
        trust_remote_code=backbone.trust_remote_code,
    )


def build_model(run: RunConfig, data: MultiTaskData) -> MultiTaskModel:
    """The encoder and one head per task, initialised from the run's seed, then prepared by the
    freezing scenario (e.g. adapters added) from a random stream of its own."""
    seed_everything(run.seed)
    encoder = build_encoder(run)
    seed_everything(run.seed)
    model = MultiTaskModel(
        encoder, data.tasks, run.model.head_hidden, run.model.head_dropout, run.model.loss_weights
    )
    # The scenario's draws (e.g. adapter initialisation) leave the run's random stream as it was.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(run.seed)
        run.freezing.scenario.prepare(model)
    return model


# ----- checks before any data loads --------------------------------------------------------
# A hub id: `name` or `namespace/name`; anything else is meant as a folder.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
LAYER_KEYS = ("num_hidden_layers", "n_layers", "num_layers")


def check_configured_tasks(run: RunConfig) -> None:
    """Config keys that name tasks (`trainer.early_stopping.metric`, `model.loss_weights`, ...)
    checked before any data loads, where every source's config names its tasks; otherwise they
    are checked as soon as the data has loaded (`load_data_checked`)."""
    names = run.data.task_names()
    if names is not None:
        check_task_names(run, names)


def check_backbone(run: RunConfig) -> None:
    """The backbone can be found (a local folder, the bundled default, or a hub id that is
    cached or may be downloaded), and the freezing scenario fits its layer count; `ConfigError`
    naming the key otherwise. Reads at most the backbone's config.json."""
    backbone = run.backbone
    config_file = backbone_config_file(backbone.name_or_path)
    layers = backbone.num_layers if backbone.random_init else layer_count(config_file)
    if layers is None:
        return
    try:
        run.freezing.scenario.check_layers(layers)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def backbone_config_file(name_or_path: str) -> Path | None:
    """The config.json of the backbone `name_or_path` names, where it can be found offline;
    None for a hub id that is not cached but may still be downloaded."""
    key = "backbone.name_or_path"
    if name_or_path in BUNDLED_NAMES:
        return bundled_model_path() / "config.json"
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{key}: the folder {folder} has no config.json (expected a model folder "
                              f"saved with save_pretrained)")
        return folder / "config.json"
    if not HUB_ID.match(name_or_path):
        raise ConfigError(f"{key}: no model folder at {name_or_path} (expected an existing folder, or a hub "
                          f"id such as bert-base-uncased or namespace/name)")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, "config.json")
    if isinstance(cached, str):
        return Path(cached)
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"{key}: {name_or_path!r} is neither a local folder nor in the Hugging Face "
                          f"cache, and HF_HUB_OFFLINE=1 forbids downloading it")
    return None


def layer_count(config_file: Path | None) -> int | None:
    """The encoder's layer count from its config.json; None when unknown."""
    if config_file is None:
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"backbone.name_or_path: {config_file} is unreadable ({error})") from None
    return next((int(config[key]) for key in LAYER_KEYS if isinstance(config.get(key), int)), None)
