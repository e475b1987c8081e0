"""The source registry, the Hydra nodes made from the dataclasses, and the package's import graph."""

from __future__ import annotations

import ast
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mtexp.data import SOURCES, DataConfig, SourceConfig, data_config, register_source
from mtexp.data.presets import CONF_DIR, defaults_node, store_defaults
from mtexp.data.registry import source_of, unregister_source
from mtexp.data.types import Corpus, DataError

PACKAGE = Path(__file__).resolve().parents[1] / "mtexp" / "data"


def test_the_sources_are_listed_once_with_their_config_and_reader() -> None:
    assert list(SOURCES) == ["jointbert", "conll", "tabular", "hub", "builtin"]
    for name, entry in SOURCES.items():
        assert entry.name == name and issubclass(entry.config, SourceConfig) and callable(entry.read)
        assert source_of(entry.config()) is entry
    with pytest.raises(ValueError, match="already registered"):
        register_source("conll", SOURCES["conll"].config, SOURCES["conll"].read)


def test_the_generated_nodes_hold_the_dataclass_defaults() -> None:
    node = defaults_node()
    assert list(node) == [f.name for f in fields(DataConfig)]
    assert node["train_fraction"] == DataConfig.train_fraction and node["sampling"]["temperature"] == 2.0
    builtin = defaults_node("builtin")
    assert list(builtin)[:4] == ["name", "source", "language", "size"]
    assert "path" not in builtin and "sources" not in builtin
    assert data_config({**builtin, "size": 10}).sources[0].size == 10


@dataclass
class FlatSource(SourceConfig):
    path: str | None = None
    level: int = 3


def test_a_source_registered_later_gets_its_flat_node_when_stored_again() -> None:
    register_source("flat_toy", FlatSource, lambda src, ctx: Corpus("x", (), {}))
    try:
        store_defaults()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["data=_flat/flat_toy", "data.level=5", "data.path=/p"])
        conf = data_config(cfg.data)
        assert conf.sources == [FlatSource(path="/p", level=5)] and conf.path == "/p"
    finally:
        unregister_source("flat_toy")
    with pytest.raises(DataError, match=r"data\.sources\[0\]\.source: expected one of"):
        data_config({"sources": [{"source": "flat_toy"}]})


def module_imports(path: Path) -> set[str]:
    """The mtexp.data modules a module imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mtexp.data"):
            if node.module == "mtexp.data":
                names |= {alias.name for alias in node.names}
            else:
                names.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[2] for a in node.names if a.name.startswith("mtexp.data.")}
    return names


def test_no_import_cycle_inside_the_package() -> None:
    graph = {p.stem: module_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(module: str, stack: tuple[str, ...]) -> None:
        assert module not in stack, f"import cycle: {' -> '.join((*stack, module))}"
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, (*stack, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert "loader" not in graph["config"] and "config" in graph["loader"]
