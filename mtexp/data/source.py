"""What every data source shares: its config base class, the read context, the registry entry.

A source is a dataclass of its config keys (a subclass of `SourceConfig`, defaults on the fields)
and a reader `read(config, context) -> Corpus`; `mtexp.data.registry` lists them by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mtexp.data.bio import SCHEMES, BioPolicy
from mtexp.data.types import Corpus, DataError


@dataclass
class SourceConfig:
    """Keys every source accepts; a source adds its own fields (each with a default).

    A source that reads tags from files may add `scheme: str = "iob2"` (or "iob1"): its tags
    are converted to IOB2 by that scheme. A `path` field takes `data.path` when neither `path`
    nor `files` is set.
    """

    name: str | None = None  # corpus name; by default the source's folder, file or data set name

    def __post_init__(self) -> None:
        """Checks of the values; a subclass with checks of its own calls this one too."""
        if self.tag_scheme() not in SCHEMES:
            raise DataError(f"scheme: expected one of {SCHEMES}, got {self.tag_scheme()!r}")

    def task_names(self) -> tuple[str, ...] | None:
        """The tasks this source feeds, where its config alone says (before anything is read);
        None where they depend on the data."""
        return None

    def tag_scheme(self) -> str:
        """The BIO scheme of the tags as the source reads them (`scheme` when it has one)."""
        return str(getattr(self, "scheme", "iob2"))

    def with_default_path(self, path: str | None) -> SourceConfig:
        """This config with `path` filled in, for a source with a `path` field that set no files."""
        has_own = getattr(self, "path", None) or getattr(self, "files", None)
        if not path or not hasattr(self, "path") or has_own:
            return self
        return dataclasses.replace(self, path=path)


@dataclass(frozen=True)
class ReadContext:
    """What a reader gets besides its config."""

    key: str  # the config key of the source, for messages: "data.sources[0]"
    policy: BioPolicy  # checks token tags and converts them to IOB2; counts repairs
    seed: int  # the run's seed, for sources that sample their sentences


Reader = Callable[[Any, ReadContext], Corpus]


@dataclass(frozen=True)
class Source:
    """A registered source: the `source:` name, its config dataclass and its reader."""

    name: str
    config: type[SourceConfig]
    read: Reader
