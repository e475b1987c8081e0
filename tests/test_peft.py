"""Parameter-efficient scenarios: BitFit (encoder biases) and LoRA (low-rank adapters via peft)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import peft
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from mtexp import load_model
from mtexp.adapters import add_adapters, has_adapters, is_adapter_parameter, save_and_merge_adapters
from mtexp.build import build_encoder, build_model, build_run_features, load_data_checked
from mtexp.config import ConfigError, validate
from mtexp.evaluate import evaluate_split
from mtexp.freezing import FreezingConfig, apply_freezing
from mtexp.optim import NO_DECAY_SUFFIX, build_optimizer, part_learning_rates
from mtexp.rundir import ADAPTER_DIR, BEST, CHECKPOINT_DIR, LAST, MODEL_FILE, RunDir
from mtexp.scenarios import SCENARIOS
from mtexp.train import CONF_DIR, run
from mtexp.trainer import BatchRunner
from mtexp.weights import load_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["backbone=tiny", "data.size=400", "trainer=quick", "eval.cka_sentences=16", "eval.train_subset=0"]
HIDDEN, INTERMEDIATE, LAYERS = 64, 128, 2  # conf/backbone/tiny.yaml
OPTIM_PRESETS = sorted(path.stem for path in (Path(CONF_DIR) / "optim").glob("*.yaml"))
TIMING_KEYS = {"train_seconds", "cache_seconds", "seconds_per_epoch", "train_samples_per_second",
               "peak_memory_mb", "train_memory_mb"}
SENTENCES = ["turn on the kitchen lights", "what time is it", "set a timer for five minutes please"]


def config(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*TINY, *overrides])


def built(*overrides: str):
    """The run config and its model, as training builds it (adapters included)."""
    settings = validate(config(*overrides))
    return settings, build_model(settings, load_data_checked(settings))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def heads_size(model) -> int:
    return sum(p.numel() for p in model.heads.parameters())


def without_timing(metrics: dict) -> dict:
    cost = {k: v for k, v in metrics["cost"].items() if k not in TIMING_KEYS}
    data = {k: v for k, v in metrics["data"].items() if k != "cache"}
    return {**metrics, "cost": cost, "data": data}


def outputs(model, batch) -> list[torch.Tensor]:
    """Token states, pooled embedding and every head's logits, in eval mode."""
    model.eval()
    with torch.no_grad():
        encoded = model.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        logits = model.forward_features(encoded.token_states, encoded.pooled, {}).logits
    return [encoded.token_states, encoded.pooled, *logits.values()]


# ----- BitFit -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layer_norm", [False, True])
def test_bitfit_trains_the_encoder_biases_and_the_heads_only(layer_norm, tmp_path):
    overrides = ("freezing=bitfit", f"freezing.layer_norm={layer_norm}", "optim.lr=1e-2")
    settings, model = built(*overrides)
    before = snapshot(model)
    state = apply_freezing(model, settings.freezing)
    norms = {f"{name}.{p}" for name, module in model.named_modules()
             if type(module).__name__ == "LayerNorm" for p, _ in module.named_parameters(recurse=False)}
    expected = {name for name in before if name.startswith("heads.") or name.endswith(".bias")
                or (layer_norm and name in norms)}
    assert {name for name, p in model.named_parameters() if p.requires_grad} == expected
    assert state.params_trainable == sum(before[name].numel() for name in expected)
    assert any(name.endswith("LayerNorm.weight") for name in expected) == layer_norm

    metrics = run(config(*overrides), tmp_path)
    after = RunDir(tmp_path).read_checkpoint(LAST)["model"]
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved <= expected and len(moved) >= 0.9 * len(expected)
    frozen = set(before) - expected
    assert frozen and all(torch.equal(before[name], after[name]) for name in frozen)
    assert metrics["cost"]["params_trainable"] == state.params_trainable
    assert metrics["cost"]["params_total"] == sum(t.numel() for t in before.values())


def test_bitfit_parameter_groups_hold_no_weight_decay_in_the_encoder():
    settings, model = built("freezing=bitfit", "optim=llrd")
    apply_freezing(model, settings.freezing)
    groups = {group["name"] for group in build_optimizer(model, settings.optim).param_groups}
    encoder_groups = {name for name in groups if name.startswith("encoder.")}
    assert encoder_groups == {f"encoder.layer_{i}{NO_DECAY_SUFFIX}" for i in range(LAYERS)} | {
        f"encoder.embeddings{NO_DECAY_SUFFIX}"}


# ----- LoRA: what trains ------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "per_layer"), [
    ((), 2 * (2 * 8 * HIDDEN)),  # query and value: A (r x h) and B (h x r) each
    (("freezing.rank=4", "freezing.target_modules=[query,key,value,attention.output.dense]"),
     4 * (2 * 4 * HIDDEN)),
    (("freezing.rank=2", "freezing.feed_forward=true"),
     2 * (2 * 2 * HIDDEN) + 2 * 2 * (HIDDEN + INTERMEDIATE)),  # + intermediate and output dense
])
def test_lora_trains_the_adapters_and_the_heads(overrides, per_layer):
    settings, model = built("freezing=lora", *overrides)
    state = apply_freezing(model, settings.freezing)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in model.named_parameters()
                         if name.startswith("heads.") or is_adapter_parameter(name)}
    assert state.params_trainable == LAYERS * per_layer + heads_size(model)
    parts = model.parameter_parts()
    adapter_parts = {parts[name].name for name in trainable if not name.startswith("heads.")}
    assert adapter_parts == {f"encoder.layer_{i}" for i in range(LAYERS)}
    assert {part.name for part in state.trainable} == adapter_parts | {"heads.intent", "heads.slots"}


@pytest.mark.parametrize("scenario", ["bitfit", "lora"])
@pytest.mark.parametrize("preset", OPTIM_PRESETS)
def test_every_optimizer_preset_takes_exactly_the_trainable_parameters(scenario, preset):
    settings, model = built(f"freezing={scenario}", f"optim={preset}")
    apply_freezing(model, settings.freezing)
    optimizer = build_optimizer(model, settings.optim)
    in_groups = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    parts = model.parameter_parts()
    rates = {part.name: lr for part, lr in part_learning_rates(model, settings.optim).items()}
    names = {id(p): name for name, p in model.named_parameters()}
    for group in optimizer.param_groups:  # layer-wise decay: each group at its part's rate
        part = group["name"].removesuffix(NO_DECAY_SUFFIX)
        assert {parts[names[id(p)]].name for p in group["params"]} == {part}
        assert group["lr"] == pytest.approx(rates[part])
    if settings.optim.layer_decay != 1:
        assert rates["encoder.layer_0"] < rates["encoder.layer_1"]


def test_lora_options_are_checked_with_the_key_named():
    for key, value in [("rank", 0), ("alpha", 0.0), ("dropout", 1.0), ("target_modules", []),
                       ("target_modules", "query")]:
        with pytest.raises(ValueError, match=rf"freezing\.{key}"):
            FreezingConfig("lora", **{key: value})
    with pytest.raises(ConfigError, match=r"freezing\.rank"):
        validate(config("freezing=lora", "freezing.rank=-1"))
    settings = validate(config("freezing=lora", "freezing.target_modules=[query,nonexistent]"))
    with pytest.raises(ValueError, match=r"freezing\.target_modules: 'nonexistent'"):
        build_model(settings, load_data_checked(settings))


def test_the_scenarios_declare_their_learning_rate_range_and_train_the_encoder():
    for name in ("bitfit", "lora"):
        low, high = SCENARIOS[name].lr_range
        assert 0 < low < high and (low, high) == (1e-4, 1e-2)
        assert SCENARIOS[name].encoder_trains and SCENARIOS[name].anything_trains


# ----- LoRA: a run end to end -------------------------------------------------------------------
LORA = ("freezing=lora", "optim.lr=1e-2")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """A tiny LoRA run, its metrics, and the model's initial tensors (adapters included)."""
    run_dir = tmp_path_factory.mktemp("lora")
    before = snapshot(built(*LORA)[1])
    return run_dir, run(config(*LORA), run_dir), before


def test_lora_base_weights_stay_bitwise_equal_until_the_merge(lora_run):
    run_dir, _, before = lora_run
    after = RunDir(run_dir).read_checkpoint(LAST)["model"]
    assert set(after) == set(before)
    adapters = {name for name in before if is_adapter_parameter(name)}
    assert adapters and all(not torch.equal(before[name], after[name]) for name in adapters)
    encoder = {name for name in before if name.startswith("encoder.") and name not in adapters}
    assert any(".base_layer." in name for name in encoder)
    assert all(torch.equal(before[name], after[name]) for name in encoder)


def test_the_merged_model_computes_what_the_adapter_model_computes(lora_run, tmp_path):
    run_dir, _, _ = lora_run
    _, model = built(*LORA)
    model.load_state_dict(RunDir(run_dir).read_checkpoint(BEST)["model"])
    batch = model.encoder.tokenize(SENTENCES)
    with_adapters = outputs(model, batch)
    save_and_merge_adapters(model, tmp_path)
    assert not has_adapters(model) and not hasattr(model.encoder.backbone, "peft_config")
    for merged, adapted in zip(outputs(model, batch), with_adapters, strict=True):
        torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)
    saved = load_weights(run_dir / MODEL_FILE)  # the run's model: the best epoch, merged
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[name], tensor) for name, tensor in model.state_dict().items())


def test_the_saved_model_has_the_backbones_own_names_and_reproduces_the_run(lora_run):
    run_dir, metrics, _ = lora_run
    names = set(load_file(run_dir / MODEL_FILE))
    settings, plain = built("freezing=none")
    assert names == {n.replace("encoder.backbone.", "encoder.", 1) for n in plain.state_dict()}
    reloaded = load_model(run_dir)
    data = load_data_checked(settings)
    features = build_run_features(settings, data, reloaded.encoder.tokenizer)
    runner = BatchRunner(settings, reloaded, data, features, torch.device("cpu"))
    for split in ("dev", "test"):
        scores = evaluate_split(data, split, runner.forward, runner.batches_for)
        assert json.loads(json.dumps(scores)) == metrics[split]


def test_the_adapter_files_are_small_and_load_with_peft(lora_run):
    run_dir, _, _ = lora_run
    folder = run_dir / ADAPTER_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    size = (folder / "adapter_model.safetensors").stat().st_size
    assert size < 0.01 * (run_dir / MODEL_FILE).stat().st_size
    described = json.loads((folder / "adapter_config.json").read_text())
    assert described["r"] == 8 and described["lora_alpha"] == 16.0
    assert described["target_modules"] == ["query", "value"]
    # The adapters on a fresh copy of the base backbone compute what the merged encoder computes.
    settings = validate(config(*LORA))
    base = build_encoder(settings)
    adapted = peft.PeftModel.from_pretrained(base.backbone, str(folder)).eval()
    merged = load_model(run_dir).encoder
    batch = merged.tokenize(SENTENCES)
    with torch.no_grad():
        expected = merged(batch["input_ids"], batch["attention_mask"]).token_states
        actual = adapted(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    actual = actual.last_hidden_state
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_lora_trains_with_gradient_accumulation_and_bf16(tmp_path):
    before = snapshot(built(*LORA)[1])
    metrics = run(config(*LORA, "trainer.grad_accumulation=2", "trainer.precision=bf16"), tmp_path)
    after = RunDir(tmp_path).read_checkpoint(LAST)["model"]
    base = [name for name in before if name.startswith("encoder.") and not is_adapter_parameter(name)]
    assert all(torch.equal(before[name], after[name]) for name in base)
    assert metrics["status"] == "completed" and 0 <= metrics["test"]["score"] <= 1
    assert (tmp_path / ADAPTER_DIR / "adapter_model.safetensors").is_file()


def test_a_killed_lora_run_resumes_to_the_same_metrics(tmp_path, train_cli):
    cli = train_cli([*TINY, *LORA, "trainer.epochs=3", "data.size=800"])
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    cli.run(reference_dir)
    checkpoint = killed_dir / CHECKPOINT_DIR / LAST
    assert cli.signal_when(cli.start(killed_dir), checkpoint.exists) == -signal.SIGKILL
    assert not (killed_dir / "metrics.json").exists()
    interrupted = torch.load(checkpoint, weights_only=False)
    assert any(is_adapter_parameter(name) for name in interrupted["model"])
    cli.run(killed_dir, "trainer.resume=true")
    reference = json.loads((reference_dir / "metrics.json").read_text())
    resumed = json.loads((killed_dir / "metrics.json").read_text())
    assert without_timing(resumed) == without_timing(reference)
    # The epochs before the kill are the first attempt's rows, not a rerun (wall-clock differs).
    history = pd.read_csv(killed_dir / "history.csv")
    done = interrupted["state"]["history"]
    assert done and history["seconds"].tolist()[: len(done)] == [row["seconds"] for row in done]
    adapters = [load_file(d / ADAPTER_DIR / "adapter_model.safetensors") for d in (reference_dir, killed_dir)]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][name], adapters[1][name]) for name in adapters[0])


def test_a_model_without_adapters_passes_the_finish_untouched(tmp_path):
    _, model = built("freezing=none")
    before = snapshot(model)
    save_and_merge_adapters(model, tmp_path)
    assert not (tmp_path / ADAPTER_DIR).exists()
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    add_adapters(model, FreezingConfig("lora", rank=2))
    assert has_adapters(model)
