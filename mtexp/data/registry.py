"""The data sources by `source:` name: each one's config dataclass and reader, listed once.

A new source is a `SourceConfig` subclass and a reader registered here (or, from outside the
package, with `register_source`) plus a preset YAML in conf/data/.
"""

from __future__ import annotations

from mtexp.data.builtin import BuiltinSource, read_builtin
from mtexp.data.conll import ConllSource, read_conll
from mtexp.data.hub import HubSource, read_hub
from mtexp.data.jointbert import JointBertSource, read_jointbert
from mtexp.data.source import Reader, Source, SourceConfig
from mtexp.data.tabular import TabularSource, read_tabular
from mtexp.data.types import DataError

# The sources that come with mtexp; `register_source` adds more.
SOURCES: dict[str, Source] = {
    entry.name: entry
    for entry in (
        Source("jointbert", JointBertSource, read_jointbert),
        Source("conll", ConllSource, read_conll),
        Source("tabular", TabularSource, read_tabular),
        Source("hub", HubSource, read_hub),
        Source("builtin", BuiltinSource, read_builtin),
    )
}


def register_source(name: str, config: type[SourceConfig], read: Reader) -> Source:
    """Offer `source: <name>` in data configs: `config` holds its keys, `read` builds its corpus."""
    if name in SOURCES:
        raise ValueError(f"data source {name!r} is already registered")
    if any(entry.config is config for entry in SOURCES.values()):
        raise ValueError(f"{config.__name__} is already the config of another source")
    SOURCES[name] = Source(name, config, read)
    return SOURCES[name]


def unregister_source(name: str) -> None:
    """Withdraw a source (tests that register one of their own)."""
    SOURCES.pop(name, None)


def source_named(name: object, key: str) -> Source:
    """The registered source `name`; an unknown one is a `DataError` naming `key`."""
    if not isinstance(name, str) or name not in SOURCES:
        raise DataError(f"{key}: expected one of {tuple(SOURCES)}, got {name!r}")
    return SOURCES[name]


def source_of(config: SourceConfig) -> Source:
    """The registered source whose config class `config` is."""
    for entry in SOURCES.values():
        if type(config) is entry.config:
            return entry
    raise DataError(f"{type(config).__name__} is not the config of a registered data source")

