"""Freezing scenarios: what trains, what stays bitwise unchanged, and dropout in frozen parts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from mtexp.data.types import TaskSpec
from mtexp.encoder import EncoderOutput, SentenceEncoder
from mtexp.freezing import FreezingConfig, apply_freezing, set_frozen_modules_eval, trainable_parts
from mtexp.model import MultiTaskModel
from mtexp.optim import OptimConfig, build_optimizer
from mtexp.parts import Part
from mtexp.scenarios import SCENARIOS as REGISTRY
from mtexp.scenarios import scenario_names

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "freezing"
TASKS = [
    TaskSpec("intent", "sequence", ("a", "b", "c")),
    TaskSpec("slots", "token", ("O", "B-x", "I-x", "B-y", "I-y")),
]
HEADS = {"heads.intent", "heads.slots"}


def names(parts: set[Part]) -> set[str]:
    return {part.name for part in parts}


def part_names(model: MultiTaskModel) -> dict[str, str]:
    return {name: part.name for name, part in model.parameter_parts().items()}


def make_model(encoder: SentenceEncoder, dropout: float = 0.1) -> MultiTaskModel:
    return MultiTaskModel(copy.deepcopy(encoder), TASKS, head_dropout=dropout)


def random_batch(seed: int = 0, size: int = 4, width: int = 9) -> dict:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 5000, (size, width), generator=generator)
    lengths = torch.randint(3, width + 1, (size,), generator=generator)
    lengths[0] = width
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    slots = torch.randint(0, 5, (size, width), generator=generator).masked_fill(mask == 0, -100)
    labels = {"intent": torch.randint(0, 3, (size,), generator=generator), "slots": slots}
    return {"input_ids": input_ids * mask, "attention_mask": mask, "labels": labels}


def train_steps(model: MultiTaskModel, cfg: FreezingConfig, epoch: int = 0, steps: int = 3):
    state = apply_freezing(model, cfg, epoch)
    optimizer = build_optimizer(model, OptimConfig(lr_encoder=1e-3, lr_head=1e-3))
    model.train()
    set_frozen_modules_eval(model, cfg)
    for step in range(steps):
        optimizer.zero_grad()
        model(random_batch(step)).loss.backward()
        optimizer.step()
    return state


SCENARIOS = {
    "none": (FreezingConfig("none"), 0),
    "backbone": (FreezingConfig("backbone"), 0),
    "head_a": (FreezingConfig("head_a", head="A"), 0),
    "head_b": (FreezingConfig("head_b"), 0),
    "head_by_name": (FreezingConfig("head_a", head="slots"), 0),
    "one_head_legacy": (FreezingConfig("one_head", head="A"), 0),
    "gradual_epoch0": (FreezingConfig("gradual"), 0),
    "gradual_epoch1": (FreezingConfig("gradual"), 1),
    "partial_k1": (FreezingConfig("partial", k=1), 0),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_frozen_parameters_unchanged_trainable_changed(tiny_encoder, scenario):
    cfg, epoch = SCENARIOS[scenario]
    model = make_model(tiny_encoder)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    state = train_steps(model, cfg, epoch)
    changed_numel = 0
    for name, param in model.named_parameters():
        unchanged = torch.equal(param.detach(), before[name])
        assert unchanged != param.requires_grad, f"{scenario}: {name} trainable={param.requires_grad}"
        changed_numel += 0 if unchanged else param.numel()
    assert state.params_trainable == changed_numel > 0
    assert state.params_total == sum(p.numel() for p in model.parameters())


def test_all_frozen_trains_nothing(tiny_encoder):
    model = make_model(tiny_encoder)
    cfg = FreezingConfig("all")
    state = apply_freezing(model, cfg)
    assert state.params_trainable == 0 and not state.trainable
    assert not any(param.requires_grad for param in model.parameters())
    assert not cfg.scenario.anything_trains and not cfg.scenario.encoder_trains
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, OptimConfig())
    model.train()
    assert set_frozen_modules_eval(model, cfg) == ["encoder", "heads.intent", "heads.slots"]
    assert not any(module.training for module in model.modules() if isinstance(module, nn.Dropout))


def test_scenario_parts(tiny_encoder):
    model = make_model(tiny_encoder)
    encoder = {"encoder.embeddings", "encoder.layer_0", "encoder.layer_1"}
    assert set(part_names(model).values()) == HEADS | encoder
    chosen = {name: names(trainable_parts(model, FreezingConfig(name), 5)) for name in ("none", "backbone")}
    assert chosen == {"none": HEADS | encoder, "backbone": HEADS}
    assert names(trainable_parts(model, FreezingConfig("head_a"))) == encoder | {"heads.slots"}
    assert names(trainable_parts(model, FreezingConfig("head_b"))) == encoder | {"heads.intent"}
    assert names(trainable_parts(model, FreezingConfig("head_b", head="B"))) == encoder | {"heads.intent"}
    assert names(trainable_parts(model, FreezingConfig("one_head", head="B"))) == encoder | {"heads.intent"}
    partial = names(trainable_parts(model, FreezingConfig("partial", k=1)))
    assert partial == HEADS | {"encoder.layer_1"}
    no_embeddings = HEADS | encoder - {"encoder.embeddings"}
    assert names(trainable_parts(model, FreezingConfig("partial", k=0))) == no_embeddings
    with pytest.raises(ValueError, match="only 2 layers"):
        trainable_parts(model, FreezingConfig("partial", k=3))
    with pytest.raises(ValueError, match="not a task"):
        trainable_parts(model, FreezingConfig("head_a", head="nope"))
    with pytest.raises(ValueError, match="no sequence task"):
        trainable_parts(MultiTaskModel(copy.deepcopy(tiny_encoder), TASKS[1:]), FreezingConfig("head_a"))


def test_parts_are_structured_and_keep_their_group_names(tiny_encoder):
    parts = make_model(tiny_encoder).parameter_parts()
    assert parts["encoder.backbone.embeddings.word_embeddings.weight"] == Part("embeddings")
    layer_1 = parts["encoder.backbone.encoder.layer.1.output.dense.weight"]
    assert layer_1 == Part("layer", layer=1) == Part.of_layer(1)
    assert parts["heads.slots.1.weight"] == Part("head", task="slots")
    expected = {Part("embeddings"): "encoder.embeddings", Part.of_layer(3): "encoder.layer_3",
                Part("encoder-other"): "encoder.other", Part.of_head("intent"): "heads.intent",
                Part("other"): "other"}
    assert {part: part.name for part in expected} == expected
    assert [part.in_encoder for part in expected] == [True, True, True, False, False]
    with pytest.raises(ValueError, match="layer index"):
        Part("layer")
    with pytest.raises(ValueError, match="kind must be one of"):
        Part("pooler")
    with pytest.raises(ValueError, match="a task goes with kind 'head'"):
        Part("embeddings", task="intent")


def test_gradual_parts_per_epoch(tiny_encoder):
    model = make_model(tiny_encoder)
    expected = [
        HEADS,
        HEADS | {"encoder.layer_1"},
        HEADS | {"encoder.layer_1", "encoder.layer_0"},
        HEADS | {"encoder.layer_1", "encoder.layer_0", "encoder.embeddings"},
    ]
    cfg = FreezingConfig("gradual")
    for epoch, parts in enumerate(expected):
        assert names(trainable_parts(model, cfg, epoch)) == parts, epoch
    assert names(trainable_parts(model, cfg, 10)) == expected[-1]
    slow = FreezingConfig("gradual", unfreeze_every=2)
    assert [len(trainable_parts(model, slow, e)) for e in range(8)] == [2, 2, 3, 3, 4, 4, 5, 5]


def test_encoder_other_thaws_with_top_layer(tiny_encoder):
    model = make_model(tiny_encoder)
    model.encoder.final_norm = nn.LayerNorm(model.encoder.hidden_size)
    parts = part_names(model)
    assert parts["encoder.final_norm.weight"] == "encoder.other"
    cfg = FreezingConfig("gradual")
    assert "encoder.other" not in names(trainable_parts(model, cfg, 0))
    assert {"encoder.other", "encoder.layer_1"} <= names(trainable_parts(model, cfg, 1))
    assert "encoder.other" not in names(trainable_parts(model, FreezingConfig("backbone")))


def _hidden(model: MultiTaskModel, batch: dict) -> EncoderOutput:
    return model.encoder(batch["input_ids"], batch["attention_mask"], output_hidden_states=True)


def test_frozen_modules_run_without_dropout(tiny_encoder):
    model = make_model(tiny_encoder)
    cfg = FreezingConfig("partial", k=1)
    apply_freezing(model, cfg)
    model.train()
    assert set_frozen_modules_eval(model, cfg) == ["encoder.embeddings", "encoder.layer_0"]
    batch = random_batch()
    first, second = _hidden(model, batch), _hidden(model, batch)
    assert torch.equal(first.hidden_states[1], second.hidden_states[1])  # after frozen layer_0
    assert not torch.equal(first.token_states, second.token_states)  # layer_1 still drops out
    assert model.encoder.layers[1].training and model.heads["intent"].training


def test_backbone_frozen_encoder_deterministic_heads_train_mode(tiny_encoder):
    model = make_model(tiny_encoder)
    cfg = FreezingConfig("backbone")
    apply_freezing(model, cfg)
    model.train()
    assert set_frozen_modules_eval(model, cfg) == ["encoder"]
    batch = random_batch()
    assert torch.equal(_hidden(model, batch).token_states, _hidden(model, batch).token_states)
    assert all(head.training for head in model.heads.values())


def test_frozen_modules_eval_can_be_switched_off(tiny_encoder):
    model = make_model(tiny_encoder)
    cfg = FreezingConfig("backbone", frozen_modules_eval=False)
    apply_freezing(model, cfg)
    model.train()
    assert set_frozen_modules_eval(model, cfg) == []
    assert all(module.training for module in model.modules())


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match=r"freezing\.name"):
        FreezingConfig("heads")
    with pytest.raises(ValueError, match=r"freezing\.head"):
        FreezingConfig("one_head")
    with pytest.raises(ValueError, match=r"freezing\.k"):
        FreezingConfig("partial", k=-1)
    with pytest.raises(ValueError, match=r"freezing\.unfreeze_every"):
        FreezingConfig("gradual", unfreeze_every=0)
    presets = {path.stem: path for path in CONF.glob("*.yaml")}
    assert {"none", "all", "backbone", "head_a", "head_b", "gradual", "partial"} <= set(presets)
    assert set(presets) == set(scenario_names(legacy=False))  # one option per registered scenario
    loaded = {stem: FreezingConfig(**OmegaConf.load(path)) for stem, path in presets.items()}
    assert all(cfg.name == stem for stem, cfg in loaded.items())  # the option name is the scenario name
    assert (loaded["head_a"].name, loaded["head_a"].head) == ("head_a", "A")
    assert (loaded["head_b"].name, loaded["head_b"].head) == ("head_b", "B")
    assert {name for name, cfg in loaded.items() if not cfg.scenario.encoder_trains} == {
        "all",
        "backbone",
    }
    assert [name for name, cfg in loaded.items() if not cfg.scenario.anything_trains] == ["all"]


def test_registry_order_and_legacy_name():
    order = ("none", "all", "backbone", "partial", "gradual", "head_a", "head_b", "one_head",
             "bitfit", "lora")
    assert scenario_names() == order
    assert [name for name, s in REGISTRY.items() if s.reference] == ["none"]
    assert [name for name, s in REGISTRY.items() if s.legacy] == ["one_head"]
    assert scenario_names(lambda s: s.reference) == ("none",)


# The freezing node of a run recorded before head_a / head_b existed, as its config.yaml has it
# (results/freezing_atis/runs/3_seed0 at git 536e2db, before that sweep was published again).
LEGACY_FREEZING_YAML = """\
freezing:
  name: one_head
  head: A
  k: 0
  unfreeze_every: 1
  frozen_modules_eval: true
"""


def test_a_run_recorded_under_the_legacy_name_still_loads(tiny_encoder):
    recorded = OmegaConf.create(LEGACY_FREEZING_YAML)
    cfg = FreezingConfig(**recorded.freezing)
    assert (cfg.name, cfg.head) == ("one_head", "A")
    model = make_model(tiny_encoder)
    assert trainable_parts(model, cfg) == trainable_parts(model, FreezingConfig("head_a"))


def gradual_steps(layers: int, horizon: int | None, epochs: int, every: int = 1) -> list[int]:
    scenario = FreezingConfig("gradual", unfreeze_every=every, thaw_epochs=horizon).scenario
    return [scenario.thaw_steps(epoch, layers) for epoch in range(epochs)]


def test_gradual_spreads_its_thaw_over_the_budget():
    # MiniLM-L6 in 3 epochs: 7 thaw steps (6 layers, then the embeddings) by epoch 2 of 0..2,
    # the last epoch starting before the budget's last quarter.
    assert gradual_steps(6, 3, 3) == [0, 4, 7]
    assert gradual_steps(6, 4, 4) == [0, 4, 7, 7]  # ceil(3 * 4 / 4) - 1 = 2
    assert gradual_steps(2, 2, 2) == [0, 3]
    assert gradual_steps(6, 1, 1) == [7]  # one epoch: everything trains from the start
    # a long budget keeps the plain pace: one step an epoch reaches the embeddings by epoch 7 of 20
    assert gradual_steps(6, 20, 9) == [0, 1, 2, 3, 4, 5, 6, 7, 7]
    assert gradual_steps(6, 20, 9, every=2) == [0, 1, 1, 2, 2, 3, 3, 4, 4]  # ceil(e / 2) beats e // 2
    # without a horizon, or with 0, one step every unfreeze_every epochs whatever the budget
    assert gradual_steps(6, None, 4) == gradual_steps(6, 0, 4) == [0, 1, 2, 3]


def test_gradual_within_a_budget_reaches_the_embeddings(tiny_encoder):
    model = make_model(tiny_encoder)
    cfg = FreezingConfig("gradual", thaw_epochs=3)
    expected = [HEADS, HEADS | {"encoder.layer_0", "encoder.layer_1"},
                HEADS | {"encoder.layer_0", "encoder.layer_1", "encoder.embeddings"}]
    assert [names(trainable_parts(model, cfg, epoch)) for epoch in range(3)] == expected


def test_a_head_frozen_after_joint_epochs(tiny_encoder):
    model = make_model(tiny_encoder)
    cfg = FreezingConfig("head_a", head="A", after_epochs=2)
    everything = set(part_names(model).values())
    assert names(trainable_parts(model, cfg, 0)) == names(trainable_parts(model, cfg, 1)) == everything
    assert names(trainable_parts(model, cfg, 2)) == everything - {"heads.intent"}
    at_start = FreezingConfig("head_a", head="A")  # after_epochs=0: frozen from the start, as before
    assert names(trainable_parts(model, at_start, 0)) == everything - {"heads.intent"}
    with pytest.raises(ValueError, match=r"freezing\.after_epochs=3 leaves no epoch"):
        FreezingConfig("head_b", after_epochs=3).scenario.check_budget(3)
    with pytest.raises(ValueError, match=r"freezing\.after_epochs"):
        FreezingConfig("head_b", after_epochs=-1)
    with pytest.raises(ValueError, match=r"freezing\.thaw_epochs"):
        FreezingConfig("gradual", thaw_epochs=-1)


def test_a_head_frozen_late_keeps_its_optimizer_place_and_stops_moving(tiny_encoder):
    from mtexp.optim import ScheduleConfig
    from mtexp.thawing import Thawing

    model = make_model(tiny_encoder)
    thawing = Thawing(model, FreezingConfig("head_a", head="A", after_epochs=1),
                      OptimConfig(lr_encoder=1e-3, lr_head=1e-3), ScheduleConfig())
    optimizer, _ = thawing.optimizer_at(0, total_steps=10)
    groups = [group["name"] for group in optimizer.param_groups]
    for epoch in range(2):
        thawing.start_epoch(optimizer, epoch)
        before = copy.deepcopy(model.heads["intent"].state_dict())
        optimizer.zero_grad(set_to_none=True)
        model(random_batch(epoch)).loss.backward()
        optimizer.step()
        after = model.heads["intent"].state_dict()
        moved = any(not torch.equal(before[k], after[k]) for k in before)
        assert moved == (epoch == 0), epoch
    assert [group["name"] for group in optimizer.param_groups] == groups
    assert not model.heads["intent"].training  # a frozen head runs without dropout
    assert thawing.complete_from(epochs=4) == 1
