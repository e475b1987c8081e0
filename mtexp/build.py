"""Assembling a run from its config: the device, the data and its features, the model."""

from __future__ import annotations

import torch

from mtexp.config import RunConfig, check_task_names
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
