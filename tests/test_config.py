"""Bad configurations fail before any work, with a message naming the key."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from mtexp.config import ConfigError, check_task_names, validate
from mtexp.data import DataConfig, SamplingConfig
from mtexp.data.jointbert import JointBertSource
from mtexp.train import CONF_DIR


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_every_group_option_composes_and_validates():
    for overrides in (
        [], ["backbone=tiny"], ["freezing=gradual"], ["freezing=partial"], ["freezing=head_b"],
        ["optim=llrd"], ["optim=discriminative"], ["optim=split"], ["schedule=slanted_triangular"],
        ["schedule=cosine"], ["trainer=quick"], ["logger=csv"],
    ):
        run = validate(composed(*overrides))
        assert run.trainer.epochs >= 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr_head=-1"], "optim.lr_head must be > 0"),
        (["optim.lr_encoder=0"], "optim.lr_encoder must be > 0"),
        (["trainer.epochs=0"], "trainer.epochs must be >= 1"),
        (["trainer.epochs=three"], "trainer.epochs"),
        (["+trainer.epoch=3"], "trainer.epoch"),
        (["trainer.precision=fp8"], "trainer.precision must be one of"),
        (["trainer.device=tpu"], "trainer.device must be one of"),
        (["backbone.pooling=sum"], "backbone.pooling must be one of"),
        (["freezing=partial", "freezing.k=-2"], "freezing.k must be >= 0"),
        (["freezing.unfreeze_every=0"], "freezing.unfreeze_every must be >= 1"),
        (["model.head_dropout=1.5"], "model.head_dropout must be in [0, 1)"),
        (["trainer.batch_size=0"], "trainer.batch_size must be >= 1"),
        (["schedule.warmup_ratio=2"], "schedule.warmup_ratio"),
        (["+optimizer.lr=1"], "unknown top-level key 'optimizer'"),
        (["seed=-1"], "seed must be an integer >= 0"),
        (["+data.trian_fraction=0.5"], "data.trian_fraction: unknown key"),
        (["data.train_fraction=1.5"], "data.train_fraction"),
        (["data.sampling.strategy=random"], "data.sampling.strategy"),
        (["data.size=many"], "data.size: expected int, got 'many'"),
        (["data=snips", "+data.sources.0.tag_colum=1"], "data.sources[0]: unknown key"),
        (["data=disjoint_example", "data.sources.1.scheme=iob3"], "data.sources[1].scheme: expected one of"),
        (["+paths.data_rot=/d"], "paths.data_rot"),
    ],
)
def test_bad_configuration_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        validate(composed(*overrides))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["freezing=head_a", "freezing.head=ner"], "freezing.head"),
        (["+model.loss_weights.sentiment=2"], "model.loss_weights"),
        (["+optim.lr_heads.topic=1e-3"], "optim.lr_heads"),
    ],
)
def test_a_head_name_that_is_not_a_task_is_rejected(overrides, key):
    run = validate(composed(*overrides))
    with pytest.raises(ConfigError, match=f"{key} names .* which is not a task"):
        check_task_names(run, ["intent", "slots"])


def test_the_data_node_is_converted_once_into_typed_configs():
    run = validate(composed("data=atis", "paths.data_root=/d", "data.sampling.strategy=round_robin"))
    assert isinstance(run.data, DataConfig) and isinstance(run.data.sampling, SamplingConfig)
    assert run.data.sampling.strategy == "round_robin" and run.data.unseen_label == "fallback"
    [source] = run.data.sources
    assert isinstance(source, JointBertSource) and source.path == run.data.path == "/d/atis"
    assert validate(composed()).data.sources[0].size == 6000


def test_a_key_may_interpolate_another_group():
    run = validate(composed("trainer.resume=/runs/${freezing.name}"))
    assert run.trainer.resume == "/runs/none"


def test_a_missing_mandatory_value_names_the_key():
    with pytest.raises(ConfigError, match=r"backbone\.name_or_path"):
        validate(composed("backbone=hub"))
