"""Parameter groups, layer-wise learning rates, weight decay exemptions and LR schedules."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from mtexp.data.types import TaskSpec
from mtexp.encoder import SentenceEncoder
from mtexp.freezing import FreezingConfig, apply_freezing
from mtexp.model import MultiTaskModel
from mtexp.optim import (
    LRSchedule,
    OptimConfig,
    ScheduleConfig,
    add_thawed_params,
    build_optimizer,
    group_learning_rates,
    no_decay_names,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
TASKS = [
    TaskSpec("intent", "sequence", ("a", "b", "c")),
    TaskSpec("slots", "token", ("O", "B-x", "I-x")),
]
LR_ENC, LR_HEAD = 1e-3, 1e-2


@pytest.fixture(scope="module")
def deep_encoder() -> SentenceEncoder:
    return SentenceEncoder.random_init(num_layers=4, hidden_size=32, intermediate_size=64, seed=1)


def make_model(encoder: SentenceEncoder) -> MultiTaskModel:
    return MultiTaskModel(copy.deepcopy(encoder), TASKS, head_hidden=16)


def expected_rates(num_layers: int, decay: float) -> dict[str, float]:
    rates = {f"encoder.layer_{i}": LR_ENC * decay ** (num_layers - (i + 1)) for i in range(num_layers)}
    rates["encoder.embeddings"] = LR_ENC * decay**num_layers
    return rates


@pytest.mark.parametrize("decay", [1.0, 0.8, 1 / 2.6])
def test_layer_group_lrs_follow_formula(deep_encoder, decay):
    model = make_model(deep_encoder)
    cfg = OptimConfig(lr_encoder=LR_ENC, lr_head=LR_HEAD, layer_decay=decay)
    rates = group_learning_rates(build_optimizer(model, cfg))
    expected = expected_rates(4, decay) | {"heads.intent": LR_HEAD, "heads.slots": LR_HEAD}
    assert rates.keys() == expected.keys()
    for name, value in expected.items():
        assert rates[name] == pytest.approx(value, rel=1e-12), name
    assert rates["encoder.layer_3"] == LR_ENC  # the top layer gets lr_encoder itself
    assert min(rates, key=rates.get) == "encoder.embeddings" or decay == 1.0


def test_per_task_head_lrs(deep_encoder):
    model = make_model(deep_encoder)
    by_name = OptimConfig(lr_head=LR_HEAD, lr_heads={"slots": 3e-2})
    assert group_learning_rates(build_optimizer(model, by_name))["heads.slots"] == 3e-2
    by_kind = OptimConfig(lr_head=LR_HEAD, lr_heads={"A": 5e-3, "B": 2e-2})
    rates = group_learning_rates(build_optimizer(model, by_kind))
    assert (rates["heads.intent"], rates["heads.slots"]) == (5e-3, 2e-2)
    with pytest.raises(ValueError, match="no such task"):
        build_optimizer(model, OptimConfig(lr_heads={"ner": 1e-3}))


def test_groups_named_with_base_lr_and_only_trainable(deep_encoder):
    model = make_model(deep_encoder)
    apply_freezing(model, FreezingConfig("partial", k=2))
    optimizer = build_optimizer(model, OptimConfig(lr_encoder=LR_ENC, lr_head=LR_HEAD))
    names = [group["name"] for group in optimizer.param_groups]
    assert len(names) == len(set(names))
    assert all(group["lr"] == group["base_lr"] for group in optimizer.param_groups)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    assert {name.removesuffix(".no_decay") for name in names} == {
        "encoder.layer_2",
        "encoder.layer_3",
        "heads.intent",
        "heads.slots",
    }
    everything = build_optimizer(model, OptimConfig(), trainable_only=False)
    assert sum(len(g["params"]) for g in everything.param_groups) == len(list(model.parameters()))


def test_no_weight_decay_on_biases_and_layernorm(deep_encoder):
    model = make_model(deep_encoder)
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.05))
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    norm_params = {
        id(p) for module in model.modules() if isinstance(module, nn.LayerNorm) for p in module.parameters()
    }
    assert norm_params
    for name, param in model.named_parameters():
        exempt = name.endswith(".bias") or id(param) in norm_params
        assert decay_of[id(param)] == (0.0 if exempt else 0.05), name
        assert (name in no_decay_names(model)) == exempt
    for group in optimizer.param_groups:
        assert group["name"].endswith(".no_decay") == (group["weight_decay"] == 0.0)


def test_norm_detected_by_type_not_name():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln = nn.LayerNorm(4)  # short name, no "LayerNorm" in it
            self.proj = nn.Linear(4, 4)

    assert no_decay_names(Net()) == {"ln.weight", "ln.bias", "proj.bias"}


def test_gradual_thawed_groups_get_llrd_lr_and_schedule(deep_encoder):
    model = make_model(deep_encoder)
    freezing = FreezingConfig("gradual")
    cfg = OptimConfig(lr_encoder=LR_ENC, lr_head=LR_HEAD, layer_decay=0.5)
    apply_freezing(model, freezing, 0)
    optimizer = build_optimizer(model, cfg)
    assert set(group_learning_rates(optimizer)) == {"heads.intent", "heads.slots"}
    schedule = LRSchedule(optimizer, ScheduleConfig("linear", warmup_ratio=0.0), total_steps=100)
    expected = expected_rates(4, 0.5) | {"heads.intent": LR_HEAD, "heads.slots": LR_HEAD}
    thaw_order = ["encoder.layer_3", "encoder.layer_2", "encoder.layer_1", "encoder.layer_0"]
    thaw_order.append("encoder.embeddings")
    for epoch in range(1, 6):
        for _ in range(10):
            schedule.step()
        apply_freezing(model, freezing, epoch)
        added = add_thawed_params(optimizer, model, cfg)
        assert {name.removesuffix(".no_decay") for name in added} == {thaw_order[epoch - 1]}
        factor = schedule.multiplier(schedule.step_count)
        assert factor == pytest.approx(1 - epoch / 10)
        for name, lr in group_learning_rates(optimizer).items():
            assert lr == pytest.approx(expected[name] * factor, rel=1e-9), (epoch, name)
    schedule.step()
    factor = schedule.multiplier(51)
    for name, lr in group_learning_rates(optimizer).items():
        assert lr == pytest.approx(expected[name] * factor, rel=1e-9), name
    assert add_thawed_params(optimizer, model, cfg) == []


def test_thawed_params_explicit_multiplier(deep_encoder):
    model = make_model(deep_encoder)
    apply_freezing(model, FreezingConfig("backbone"))
    optimizer = build_optimizer(model, OptimConfig(lr_encoder=LR_ENC))
    apply_freezing(model, FreezingConfig("none"))
    add_thawed_params(optimizer, model, OptimConfig(lr_encoder=LR_ENC), multiplier=0.25)
    assert group_learning_rates(optimizer)["encoder.layer_0"] == pytest.approx(LR_ENC * 0.25)


def make_schedule(name: str, total: int = 100, **kwargs) -> LRSchedule:
    optimizer = torch.optim.AdamW([{"params": [nn.Parameter(torch.zeros(1))], "base_lr": 0.1}], lr=0.1)
    return LRSchedule(optimizer, ScheduleConfig(name, **kwargs), total)


def test_schedule_multipliers_at_known_steps():
    constant = make_schedule("constant", warmup_ratio=0.1)
    assert [constant.multiplier(s) for s in (0, 5, 10, 50, 100)] == [0.0, 0.5, 1.0, 1.0, 1.0]
    linear = make_schedule("linear", warmup_ratio=0.1)
    assert [linear.multiplier(s) for s in (0, 5, 10, 55, 100)] == pytest.approx([0, 0.5, 1, 0.5, 0])
    floor = make_schedule("linear", warmup_ratio=0.1, min_lr_ratio=0.1)
    assert floor.multiplier(100) == pytest.approx(0.1)
    assert floor.multiplier(55) == pytest.approx(0.55)
    cosine = make_schedule("cosine", warmup_ratio=0.1, min_lr_ratio=0.2)
    assert [cosine.multiplier(s) for s in (10, 55, 100)] == pytest.approx([1.0, 0.6, 0.2])
    assert cosine.multiplier(32.5) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4)))
    no_warmup = make_schedule("linear")
    assert no_warmup.multiplier(0) == 1.0


def test_slanted_triangular_matches_howard_ruder():
    stlr = make_schedule("slanted_triangular", total=1000, cut_frac=0.1, ratio=32)
    assert stlr.multiplier(0) == pytest.approx(1 / 32)
    assert stlr.multiplier(100) == pytest.approx(1.0)  # peak at cut = floor(T * cut_frac)
    assert stlr.multiplier(50) == pytest.approx((1 + 0.5 * 31) / 32)
    assert stlr.multiplier(550) == pytest.approx((1 + 0.5 * 31) / 32)
    assert stlr.multiplier(1000) == pytest.approx(1 / 32)
    values = [stlr.multiplier(s) for s in range(1001)]
    assert max(values) == values[100]


def test_schedule_sets_lr_of_groups_added_later():
    schedule = make_schedule("linear", warmup_ratio=0.1)
    for _ in range(5):
        schedule.step()
    assert schedule.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    schedule.optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "base_lr": 1.0})
    schedule.step()
    assert [g["lr"] for g in schedule.optimizer.param_groups] == pytest.approx([0.06, 0.6])


def test_schedule_state_round_trip(deep_encoder):
    model = make_model(deep_encoder)
    cfg = ScheduleConfig("cosine", warmup_ratio=0.2)
    first = LRSchedule(build_optimizer(model, OptimConfig()), cfg, total_steps=40)
    for _ in range(13):
        first.step()
    state = first.state_dict()
    second = LRSchedule(build_optimizer(model, OptimConfig()), cfg, total_steps=40)
    second.load_state_dict(state)
    assert second.step_count == 13 and second.get_last_lr() == first.get_last_lr()
    first.step()
    second.step()
    assert second.get_last_lr() == first.get_last_lr()


def test_config_validation():
    with pytest.raises(ValueError, match=r"optim\.lr_head must be > 0, got -1"):
        OptimConfig(lr_head=-1)
    with pytest.raises(ValueError, match=r"optim\.lr_heads\.slots"):
        OptimConfig(lr_heads={"slots": 0})
    with pytest.raises(ValueError, match=r"optim\.betas"):
        OptimConfig(betas=(0.9, 1.5))
    with pytest.raises(ValueError, match=r"schedule\.name"):
        ScheduleConfig("step")
    with pytest.raises(ValueError, match=r"schedule\.cut_frac"):
        ScheduleConfig("slanted_triangular", cut_frac=0)


def _load(group: str) -> dict[str, dict]:
    return {
        path.stem: OmegaConf.to_container(
            OmegaConf.create({group: OmegaConf.load(path)})[group], resolve=True
        )
        for path in sorted((CONF / group).glob("*.yaml"))
    }


def test_presets():
    optim = {name: OptimConfig(**node) for name, node in _load("optim").items()}
    assert set(optim) == {"adamw", "split", "llrd", "discriminative", "per_task_heads"}
    assert optim["adamw"].lr_encoder == optim["adamw"].lr_head == optim["adamw"].lr == 1e-4
    assert (optim["split"].lr_encoder, optim["split"].lr_head) == (1e-5, 1e-4)
    assert optim["llrd"].layer_decay == 0.8
    assert optim["discriminative"].layer_decay == pytest.approx(1 / 2.6)
    assert set(optim["per_task_heads"].lr_heads) == {"A", "B"}
    schedules = {name: ScheduleConfig(**node) for name, node in _load("schedule").items()}
    assert {name: cfg.name for name, cfg in schedules.items()} == {
        "constant": "constant",
        "linear": "linear",
        "cosine": "cosine",
        "slanted_triangular": "slanted_triangular",
    }
