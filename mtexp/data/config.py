"""The `data` config node as typed dataclasses, converted once by `data_config`.

Every default lives on the dataclass fields here and on each source's config class
(`mtexp.data.registry`); presets in conf/data/ set only what differs.
"""

from __future__ import annotations

import copy
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtexp.data.registry import SOURCES, source_named
from mtexp.data.source import SourceConfig
from mtexp.data.types import DataError

STRATEGIES = ("proportional", "round_robin", "temperature")
UNSEEN_LABEL_POLICIES = ("error", "fallback")
T = TypeVar("T")


@dataclass
class SamplingConfig:
    """How the steps of an epoch are shared among the corpora of disjoint data."""

    strategy: str = "proportional"  # proportional | round_robin | temperature (p_i ~ n_i^(1/T))
    temperature: float = 2.0
    steps_per_epoch: int | None = None  # null: one pass over every corpus (sum of ceil(n_i / batch))

    def __post_init__(self) -> None:
        _check(self.strategy in STRATEGIES, "strategy", f"one of {STRATEGIES}", self.strategy)
        _check(_is_number(self.temperature) and self.temperature > 0, "temperature", "a number > 0",
               self.temperature)
        steps = self.steps_per_epoch
        _check(steps is None or (_is_int(steps) and steps >= 1), "steps_per_epoch",
               "a positive integer or null", steps)


@dataclass
class DataConfig:
    """The `data` node: the sources, how their splits are made, and how batches are drawn."""

    name: str | None = None  # the data set's name; by default the corpus names joined by "+"
    path: str | None = None  # the `path` of sources that set neither `path` nor `files`
    sources: list[SourceConfig] = field(default_factory=list)
    train_fraction: float = 1.0  # share of train kept (learning curves), stratified, seeded
    max_train_examples: int | None = None  # cap on train examples per corpus after train_fraction
    dev_fraction: float = 0.1  # dev carved from train only when a source has no dev split
    test_fraction: float = 0.1  # likewise for test
    unseen_label: str = "error"  # dev/test label missing from train: error | fallback (UNK / "O")
    strict_bio: bool = False  # I- without B-: false repairs to IOB2 (counted), true rejects
    label_all_tokens: bool = False  # true: continuation sub-tokens carry the word label (B- -> I-)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    group_by_length: bool = True  # batches of similar length (shuffled, sorted in 50-batch chunks)
    cache_dir: str | None = None  # tokenised features are cached here, reused across runs

    def __post_init__(self) -> None:
        _check(isinstance(self.sources, list) and bool(self.sources), "sources",
               "a non-empty list of sources", self.sources)
        _check(_is_fraction(self.train_fraction), "train_fraction", "a number in (0, 1]",
               self.train_fraction)
        for key in ("dev_fraction", "test_fraction"):
            value = getattr(self, key)
            _check(_is_fraction(value) and value < 1, key, "a number in (0, 1)", value)
        limit = self.max_train_examples
        _check(limit is None or (_is_int(limit) and limit >= 1), "max_train_examples",
               "a positive integer or null", limit)
        _check(self.unseen_label in UNSEEN_LABEL_POLICIES, "unseen_label", "'error' or 'fallback'",
               self.unseen_label)
        self.sources = [source.with_default_path(self.path) for source in self.sources]

    def task_names(self) -> list[str] | None:
        """Every source's tasks, in order, where each source's config names them; else None."""
        names: list[str] = []
        for source in self.sources:
            tasks = source.task_names()
            if tasks is None:
                return None
            names.extend(task for task in tasks if task not in names)
        return names


DATA_KEYS = frozenset(f.name for f in fields(DataConfig))
# In the flat form these data keys also reach the source, when it has a field of that name.
FLAT_SHARED_KEYS = frozenset({"name", "path", "dev_fraction", "test_fraction"})


def data_config(cfg: DataConfig | Mapping[str, Any]) -> DataConfig:
    """The data node as a `DataConfig`: the one conversion; every default comes from the dataclasses.

    `cfg` is the node (an OmegaConf node, interpolations resolved here, or a plain mapping), a
    root config holding it under `data`, or a `DataConfig`, returned as it is. Sources come as a
    `sources:` list, or flat: `source: <name>` beside the data keys. A bad key or value is a
    `DataError` naming it: `data.<key>`, `data.sources[i].<key>`.
    """
    if isinstance(cfg, DataConfig):
        return cfg
    node = _plain_mapping(cfg)
    if "sources" not in node and "source" in node:
        return _from_flat(node)
    _check_keys(node, DATA_KEYS, "data")
    sources = node.get("sources")
    if isinstance(sources, list):
        node["sources"] = [_source_config(src, f"data.sources[{i}]") for i, src in enumerate(sources)]
    return build(DataConfig, {**node, "sampling": _sampling(node)}, "data")


def _from_flat(node: dict[str, Any]) -> DataConfig:
    """The flat form: one source's keys beside the data keys, as a one-item `sources` list."""
    entry = source_named(node["source"], "data.source")
    source_keys = {f.name for f in fields(entry.config)}
    _check_keys(node, DATA_KEYS | source_keys | {"source"}, "data")
    passed = source_keys - (DATA_KEYS - FLAT_SHARED_KEYS)
    source = build(entry.config, {k: v for k, v in node.items() if k in passed}, "data")
    data = {k: v for k, v in node.items() if k in DATA_KEYS}
    return build(DataConfig, {**data, "sources": [source], "sampling": _sampling(node)}, "data")


def _source_config(src: Any, key: str) -> SourceConfig:
    if not isinstance(src, Mapping):
        raise DataError(f"{key}.source: expected one of {tuple(SOURCES)}, got {src!r}")
    entry = source_named(src.get("source"), f"{key}.source")
    accepted = {"source", *(f.name for f in fields(entry.config))}
    unknown = set(src) - accepted
    if unknown:
        raise DataError(f"{key}: unknown key(s) {sorted(unknown)} for source {entry.name!r}; "
                        f"accepted: {sorted(accepted)}")
    return build(entry.config, {k: v for k, v in src.items() if k != "source"}, key)


def _sampling(node: Mapping[str, Any]) -> SamplingConfig:
    values = node.get("sampling") or {}
    if not isinstance(values, Mapping):
        raise DataError(f"data.sampling: expected a mapping, got {values!r}")
    _check_keys(values, {f.name for f in fields(SamplingConfig)}, "data.sampling")
    return build(SamplingConfig, values, "data.sampling")


def build(cls: type[T], values: Mapping[str, Any], key: str) -> T:
    """`cls(**values)`, each value checked against its field's type; errors name `key.<field>`."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        _check_type(value, hints[name], f"{key}.{name}")
    try:
        return cls(**values)
    except DataError as error:
        raise DataError(f"{key}.{error}") from None


def _plain_mapping(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the node as plain values; a root config yields its `data` node."""
    if not isinstance(cfg, Mapping):
        raise DataError(f"data config must be a mapping, got {type(cfg).__name__}")
    if "sources" not in cfg and "source" not in cfg and isinstance(cfg.get("data"), Mapping):
        cfg = cfg["data"]
    if isinstance(cfg, DictConfig | ListConfig):
        try:
            node = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as error:  # e.g. a preset file loaded alone: no `paths`
            where = getattr(error, "full_key", None) or "?"
            raise DataError(f"data.{where}: {str(error).splitlines()[0]} (compose a preset with "
                            "mtexp.data.load_preset)") from None
    else:
        node = copy.deepcopy(dict(cfg))
    if not isinstance(node, dict):
        raise DataError(f"data config must be a mapping, got {type(node).__name__}")
    return node


def _check_keys(node: Mapping[str, Any], known: set[str] | frozenset[str], key: str) -> None:
    """An unknown key is an error: a typo must not silently fall back to a default."""
    unknown = sorted(str(k) for k in set(node) - known)
    if unknown:
        raise DataError(f"{key}.{unknown[0]}: unknown key; expected one of {sorted(known)}")


def _check_type(value: Any, hint: Any, key: str) -> None:
    """A value must have its field's type: an int is a float, a bool is no number."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if any(option is Any or _is_instance(value, option) for option in options):
        return
    name = hint.__name__ if isinstance(hint, type) else re.sub(r"[\w.]+\.(?=\w)", "", str(hint))
    raise DataError(f"{key}: expected {name}, got {value!r}")


def _is_instance(value: Any, kind: Any) -> bool:
    kind = typing.get_origin(kind) or kind
    if kind is type(None):
        return value is None
    if kind is float:
        return _is_number(value)
    if kind is int:
        return _is_int(value)
    if kind is str:
        return isinstance(value, str | os.PathLike)
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind) if isinstance(kind, type) else True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_fraction(value: Any) -> bool:
    """A number in (0, 1]."""
    return _is_number(value) and 0 < value <= 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise DataError(f"{key}: expected {expected}, got {got!r}")
