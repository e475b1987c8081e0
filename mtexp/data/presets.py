"""The `data` config group on Hydra's side: default nodes made from the dataclasses, and presets.

Presets in conf/data/ extend a generated node in their defaults list, so that a composed `data`
node holds every key (each one can be overridden without `+`) while the defaults stay on the
dataclasses:

- `data/_defaults`: every data key at its default, sources as a `sources:` list;
- `data/_flat/<source>`: the flat form of one source (`source: <source>` beside the data keys),
  extended as `- _flat/<source>@_here_` (a config of a subfolder goes to the preset's package).

They are stored in Hydra's ConfigStore when this module is imported (`import mtexp.data`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtexp.data.config import DataConfig
from mtexp.data.registry import SOURCES

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
GROUP = "data"
SUBDIR_RESOLVER = "mtexp.subdir"


def subdir(root: str | None, name: str) -> str | None:
    """`${mtexp.subdir:${paths.cache_root},features}`: `<root>/<name>`, or null when the root is
    null or empty, so that `paths.cache_root=null` switches the caches off instead of writing
    them under a folder named `None`."""
    if root is None or not str(root).strip():
        return None
    return f"{str(root).rstrip('/')}/{name}"


def defaults_node(source: str | None = None) -> dict[str, Any]:
    """Every data key at its default: the `sources:` form, or the flat form of `source`."""
    data = _field_defaults(DataConfig)
    if source is None:
        return data
    own = _field_defaults(SOURCES[source].config)
    head = {"name": data["name"], **({"path": data["path"]} if "path" in own else {})}
    rest = {k: v for k, v in data.items() if k not in (*own, "path", "sources")}
    return {**head, "source": source, **{k: v for k, v in own.items() if k not in head}, **rest}


def store_defaults() -> None:
    """Store the generated nodes in Hydra's ConfigStore (again after `register_source`)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group=GROUP, name="_defaults", node=defaults_node())
    for name in SOURCES:
        store.store(group=f"{GROUP}/_flat", name=name, node=defaults_node(name))


def load_preset(name: str, *overrides: str) -> DictConfig:
    """The `data` node that `mtexp-train data=<name> <overrides...>` composes, interpolations
    resolved: for scripts, notebooks and tests, to pass (changed or not) to `load_data`."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"data={name}", *overrides])
    return OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))


def _field_defaults(cls: type) -> dict[str, Any]:
    """Field name -> default value (nested dataclasses as dicts), in field order."""
    out = {}
    for f in dataclasses.fields(cls):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


OmegaConf.register_new_resolver(SUBDIR_RESOLVER, subdir, replace=True)
store_defaults()
