"""Extension points: each is added the way the README says, and used end to end."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from matplotlib.figure import Figure

from mtexp.checkpoint import load_checkpoint
from mtexp.config import validate
from mtexp.data import Corpus, Example, ReadContext, SourceConfig, register_source
from mtexp.data.registry import unregister_source
from mtexp.data.textio import read_lines, resolve_path
from mtexp.parts import Part
from mtexp.plots import PLOTS, register_plot
from mtexp.report import build_report
from mtexp.scenarios import SCENARIOS, Scenario, num_layers, register
from mtexp.train import CONF_DIR, build_model, load_data_checked, run

# ----- freezing scenarios, optimizer presets, report plots --------------------------------------
TINY = ["backbone=tiny", "data.size=400", "trainer=quick", "trainer.epochs=1",
        "eval.cka_sentences=0", "eval.train_subset=0"]


def compose_with(search_dir: Path, *overrides: str):
    """conf/config.yaml with `search_dir` on Hydra's search path, as `hydra.searchpath` adds it."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[f"hydra.searchpath=[file://{search_dir}]", *TINY, *overrides])


def write_option(search_dir: Path, group: str, name: str, node: dict) -> None:
    (search_dir / group).mkdir(parents=True, exist_ok=True)
    (search_dir / group / f"{name}.yaml").write_text(yaml.safe_dump(node))


@pytest.fixture()
def top_layer_scenario():
    """A scenario defined as the README says: one registered class (plus one YAML, per test)."""

    @register
    class TopLayer(Scenario):
        """The heads and the top encoder layer train; the rest stays as loaded."""

        name = "top_layer"

        def trainable(self, parts, kinds, epoch):
            top = Part.of_layer(num_layers(parts) - 1)
            return {part for part in parts if part.kind == "head" or part == top}

    yield TopLayer
    del SCENARIOS[TopLayer.name]


def test_a_new_freezing_scenario_is_one_class_and_one_yaml(top_layer_scenario, tmp_path):
    write_option(tmp_path / "conf", "freezing", "top_layer", {"name": "top_layer"})
    cfg = compose_with(tmp_path / "conf", "freezing=top_layer")
    settings = validate(cfg)
    model = build_model(settings, load_data_checked(settings))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    parts = model.parameter_parts()
    metrics = run(cfg, tmp_path / "run")
    after = load_checkpoint(tmp_path / "run")["model"]
    chosen = {"heads.intent", "heads.slots", "encoder.layer_1"}
    moved = {name for name in parts if not torch.equal(before[name], after[name])}
    assert moved == {name for name, part in parts.items() if part.name in chosen}
    assert metrics["cost"]["params_trainable"] == sum(before[name].numel() for name in moved)
    lr_columns = [c for c in pd.read_csv(tmp_path / "run" / "history.csv").columns if c.startswith("lr.")]
    assert sorted(lr_columns) == sorted(f"lr.{name}" for name in chosen)


def test_a_new_optimizer_preset_is_one_yaml(tmp_path):
    preset = {"name": "toy", "lr": 1e-4, "lr_encoder": 2e-4, "lr_head": 3e-3, "lr_heads": {"B": 5e-3},
              "layer_decay": 0.5, "weight_decay": 0.0, "betas": [0.9, 0.99], "eps": 1e-8}
    write_option(tmp_path / "conf", "optim", "toy", preset)
    cfg = compose_with(tmp_path / "conf", "optim=toy", "schedule=constant")
    assert validate(cfg).optim.layer_decay == 0.5
    run(cfg, tmp_path / "run")
    history = pd.read_csv(tmp_path / "run" / "history.csv").iloc[0]
    expected = {"lr.heads.intent": 3e-3, "lr.heads.slots": 5e-3, "lr.encoder.layer_1": 2e-4,
                "lr.encoder.layer_0": 2e-4 * 0.5, "lr.encoder.embeddings": 2e-4 * 0.5**2}
    assert {column: history[column] for column in expected} == pytest.approx(expected, rel=1e-6)


@pytest.fixture()
def toy_plot():
    """A plot registered as the README says; records what it was given."""
    calls: list[tuple[int, list[str]]] = []

    @register_plot("toy_plot", "Runs per group (a toy plot).")
    def runs_per_group(df: pd.DataFrame, hist: pd.DataFrame, by: list[str]) -> Figure | None:
        calls.append((len(df), list(by)))
        fig = Figure(figsize=(3, 2))
        fig.add_subplot().bar(range(df[by[0]].nunique()), df.groupby(by[0]).size())
        return fig

    yield calls
    del PLOTS["toy_plot"]


def write_run(run_dir: Path, freezing: str, seed: int, accuracy: float) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "choices.yaml").write_text(yaml.safe_dump({"freezing": freezing}))
    (run_dir / "status.json").write_text(json.dumps({"status": "completed"}))
    metrics = {"status": "completed", "seed": seed, "test": {"intent": {"accuracy": accuracy}}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_a_new_report_plot_is_one_registered_function(toy_plot, tmp_path):
    for job, (freezing, seed) in enumerate([("none", 0), ("none", 1), ("backbone", 0), ("backbone", 1)]):
        write_run(tmp_path / "sweep" / f"{job}_seed{seed}", freezing, seed, 0.9 - 0.1 * job)
    written = build_report([tmp_path / "sweep"], out=tmp_path / "report")
    assert toy_plot == [(4, ["freezing"])]
    assert written["toy_plot.png"].read_bytes().startswith(b"\x89PNG")
    page = written["report.html"].read_text()
    assert "<img alt='toy_plot' src='data:image/png;base64," in page
    assert "<figcaption>Runs per group (a toy plot).</figcaption>" in page


# ----- data: a source of one's own --------------------------------------------------------------
# A new source is a config dataclass and a reader, registered once, plus a preset YAML in a
# `data/` folder on Hydra's search path. Here: a text file of `intent<TAB>words<TAB>tags` lines.

TOY_INTENTS = {
    "greet": ["hello {x}", "hi there {x}", "good morning {x}"],
    "order": ["order a {x} please", "i want a {x}", "get me one {x}"],
    "weather": ["weather in {x}", "is it raining in {x}", "forecast for {x} today"],
}
TOY_VALUES = ["anna", "tea", "paris", "bob", "coffee", "rome", "carl", "juice", "oslo", "dora"]


@dataclass
class ToySource(SourceConfig):
    """`source: toy`: one file of `intent<TAB>words<TAB>tags` lines; dev and test are carved."""

    path: str | None = None
    sequence_task: str = "intent"
    token_task: str = "slots"


def read_toy(src: ToySource, ctx: ReadContext) -> Corpus:
    """The reader: every line an example; tags go through the run's BIO policy."""
    path = resolve_path(src.path, f"{ctx.key}.path")
    examples = []
    for number, line in enumerate(read_lines(path), start=1):
        intent, words, tags = line.split("\t")
        labels = {src.sequence_task: intent,
                  src.token_task: ctx.policy.normalise(tags.split(), f"{path}:{number}", "train")}
        examples.append(Example(words=words.split(), labels=labels))
    return Corpus(name=src.name or "toy", tasks=(src.sequence_task, src.token_task),
                  splits={"train": examples})


def write_toy_file(path: Path) -> int:
    lines = []
    for intent, templates in TOY_INTENTS.items():
        for template in templates:
            for value in TOY_VALUES:
                words = template.format(x=value).split()
                tags = ["B-thing" if word == value else "O" for word in words]
                lines.append(f"{intent}\t{' '.join(words)}\t{' '.join(tags)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


@pytest.fixture
def toy_source():
    entry = register_source("toy", ToySource, read_toy)
    yield entry
    unregister_source("toy")


def test_a_registered_source_trains_from_its_own_preset(toy_source, tmp_path: Path) -> None:
    examples = write_toy_file(tmp_path / "toy.tsv")
    presets = tmp_path / "conf" / "data"
    presets.mkdir(parents=True)
    (presets / "toy.yaml").write_text(
        "defaults:\n  - _defaults\n  - _self_\n\n"  # every data key at its default
        f"name: toy\nsources:\n  - source: toy\n    path: {tmp_path / 'toy.tsv'}\n"
    )
    overrides = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "data=toy", "backbone=tiny",
                 "trainer=quick", "trainer.epochs=1", "eval.cka_sentences=16", "eval.train_subset=0"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)

    metrics = run(cfg, tmp_path / "run")

    corpus = metrics["data"]["corpora"]["toy"]
    assert corpus["tasks"] == ["intent", "slots"] and corpus["carved"] == ["dev", "test"]
    assert sum(corpus["sizes"].values()) == examples == 90
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert labels == {"intent": sorted(TOY_INTENTS), "slots": ["O", "B-thing", "I-thing"]}
    assert metrics["epochs_run"] == 1 and 0.0 <= metrics["test"]["intent"]["accuracy"] <= 1.0
