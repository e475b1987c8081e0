"""Extension points: what a user adds to mtexp without editing it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mtexp.data import Corpus, Example, ReadContext, SourceConfig, register_source
from mtexp.data.registry import unregister_source
from mtexp.data.textio import read_lines, resolve_path
from mtexp.train import CONF_DIR, run

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
