"""The `data` config node: defaults, validation and conversion to plain Python."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from mtexp.data.types import DataError

log = logging.getLogger(__name__)

STRATEGIES = ("proportional", "round_robin", "temperature")
SOURCES = ("jointbert", "conll", "tabular", "hub", "builtin")
DEFAULTS: dict[str, Any] = {
    "name": None,
    "path": None,  # default `path` for sources that set none (so `data.path=` works on presets)
    "sources": None,
    "train_fraction": 1.0,
    "max_train_examples": None,
    "dev_fraction": 0.1,
    "test_fraction": 0.1,
    "unseen_label": "error",
    "strict_bio": False,
    "label_all_tokens": False,
    "sampling": {"strategy": "proportional", "temperature": 2.0, "steps_per_epoch": None},
    "group_by_length": True,
    "cache_dir": None,
}


def to_plain(cfg: Any) -> Any:
    """An OmegaConf node (interpolations resolved) or mapping as plain dicts and lists."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, DictConfig | ListConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:
        pass
    return copy.deepcopy(cfg)


def data_config(cfg: Mapping) -> dict[str, Any]:
    """The validated data node, defaults filled in; accepts the node or a root config holding it."""
    if "sources" not in cfg and "source" not in cfg and isinstance(cfg.get("data"), Mapping):
        cfg = cfg["data"]  # a root config: convert only its data node
    if not isinstance(cfg, Mapping):
        raise DataError(f"data config must be a mapping, got {type(cfg).__name__}")
    node = to_plain(cfg)
    if not isinstance(node, Mapping):
        raise DataError(f"data config must be a mapping, got {type(node).__name__}")
    _check_known_keys(node)
    if "sources" not in node and "source" in node:
        node = _single_source(node)
    out = {**copy.deepcopy(DEFAULTS), **node}
    out["sampling"] = {**DEFAULTS["sampling"], **(node.get("sampling") or {})}
    _validate(out)
    return out


def _check_known_keys(node: Mapping[str, Any]) -> None:
    """An unknown data key is an error: a typo must not silently fall back to a default."""
    known = set(DEFAULTS)
    if "sources" not in node and "source" in node:
        from mtexp.data.builtin import KEYS as BUILTIN_KEYS
        from mtexp.data.loader import READERS

        source = node["source"]
        known |= BUILTIN_KEYS if source == "builtin" else set(READERS.get(source, (None, set()))[1])
    unknown = sorted(set(node) - known)
    if unknown:
        raise DataError(f"data.{unknown[0]}: unknown key; expected one of {sorted(known)}")


def _single_source(node: Mapping[str, Any]) -> dict[str, Any]:
    """The flat form (`source: ...` beside the data keys) as a one-item `sources` list.

    A builtin source gets the whole node (it reads its own keys and ignores the rest)."""
    if node["source"] == "builtin":
        src = dict(node)
    else:
        shared = set(DEFAULTS) - {"name", "path"}
        src = {k: v for k, v in node.items() if k not in shared}
    return {**{k: v for k, v in node.items() if k in DEFAULTS}, "sources": [src]}


def _validate(cfg: dict[str, Any]) -> None:
    sources = cfg["sources"]
    if not isinstance(sources, list) or not sources:
        raise DataError("data.sources: expected a non-empty list of sources")
    for i, src in enumerate(sources):
        if not isinstance(src, Mapping) or src.get("source") not in SOURCES:
            got = src.get("source") if isinstance(src, Mapping) else src
            raise DataError(f"data.sources[{i}].source: expected one of {SOURCES}, got {got!r}")
    _fraction(cfg, "train_fraction", upper_open=False)
    _fraction(cfg, "dev_fraction")
    _fraction(cfg, "test_fraction")
    limit = cfg["max_train_examples"]
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DataError(f"data.max_train_examples: expected a positive integer or null, got {limit!r}")
    if cfg["unseen_label"] not in ("error", "fallback"):
        raise DataError(f"data.unseen_label: expected 'error' or 'fallback', got {cfg['unseen_label']!r}")
    check_sampling(cfg["sampling"])


def check_sampling(sampling: Mapping[str, Any]) -> None:
    if sampling.get("strategy") not in STRATEGIES:
        raise DataError(
            f"data.sampling.strategy: expected one of {STRATEGIES}, got {sampling.get('strategy')!r}"
        )
    temperature = sampling.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or temperature <= 0:
        raise DataError(f"data.sampling.temperature: expected a number > 0, got {temperature!r}")
    steps = sampling.get("steps_per_epoch")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise DataError(f"data.sampling.steps_per_epoch: expected a positive integer or null, got {steps!r}")


def _fraction(cfg: dict[str, Any], key: str, upper_open: bool = True) -> None:
    value = cfg[key]
    ok = isinstance(value, int | float) and value > 0 and (value < 1 if upper_open else value <= 1)
    if not ok:
        upper = "1)" if upper_open else "1]"
        raise DataError(f"data.{key}: expected a number in (0, {upper}, got {value!r}")
