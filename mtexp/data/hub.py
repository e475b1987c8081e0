"""Hugging Face datasets by name (`datasets.load_dataset`), with a column mapping."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mtexp.data.bio import BioPolicy
from mtexp.data.columns import ColumnMap, ColumnSource, check_columns, to_examples
from mtexp.data.source import ReadContext
from mtexp.data.textio import resolve_path
from mtexp.data.types import SPLITS, Corpus, DataError

DEFAULT_SPLIT_NAMES = {"train": "train", "dev": "validation", "test": "test"}


@dataclass
class HubSource(ColumnSource):
    """`source: hub`: `datasets.load_dataset(dataset, config_name, data_files=...)`."""

    dataset: str | None = None  # required: a hub id, or json / csv / parquet with data_files
    config_name: str | None = None
    data_files: Any = None  # a file, a list of files, or split -> file(s)
    revision: str | None = None
    split_names: dict[str, str] | None = None  # our split -> the data set's (train/validation/test)
    cache_dir: str | None = None  # where `datasets` caches; null: its own default
    scheme: str = "iob2"


def read_hub(src: HubSource, ctx: ReadContext) -> Corpus:
    """`load_dataset(dataset, config_name, data_files=..)`; ClassLabel ids become their names."""
    import datasets

    key, name = ctx.key, src.dataset
    if not name:
        raise DataError(f"{key}.dataset: name the dataset (a hub id, or json/csv/parquet)")
    cmap = ColumnMap.from_source(src, key)
    kwargs = {"revision": src.revision, "data_files": _data_files(src, key)}
    if src.cache_dir:
        kwargs["cache_dir"] = str(resolve_path(src.cache_dir, f"{key}.cache_dir", False))
    try:
        loaded = datasets.load_dataset(name, src.config_name, **kwargs)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        raise DataError(f"{key}: load_dataset({name!r}) failed: {err}") from None
    names = {**DEFAULT_SPLIT_NAMES, **(src.split_names or {})}
    splits = {}
    for split in SPLITS:
        hub_split = names.get(split)
        if hub_split and hub_split in loaded:
            splits[split] = _split_examples(loaded[hub_split], cmap, f"{name}[{hub_split}]",
                                            split, ctx.policy, key)
    if "train" not in splits:
        raise DataError(
            f"{key}.split_names: no train split {names['train']!r} in {name}; "
            f"it has {list(loaded)}"
        )
    corpus_name = src.name or name.replace("/", "_")
    return Corpus(name=corpus_name, tasks=cmap.tasks, splits=splits)


def _data_files(src: HubSource, key: str) -> object:
    files = src.data_files
    if not files:
        return None
    if isinstance(files, Mapping):
        return {s: _local(p, f"{key}.data_files.{s}") for s, p in files.items()}
    return _local(files, f"{key}.data_files")


def _local(path: object, key: str) -> object:
    if isinstance(path, str) and "://" not in path and not any(c in path for c in "*?["):
        return str(resolve_path(path, key))
    return path


def _split_examples(ds, cmap: ColumnMap, where: str, split: str, policy: BioPolicy, key: str):
    check_columns(ds.column_names, cmap, where, key)
    names = {}
    for column in (cmap.label, cmap.tags):
        feature = ds.features.get(column) if column else None
        feature = getattr(feature, "feature", feature)
        if hasattr(feature, "names"):
            names[column] = list(feature.names)
    table = {col: list(ds[col]) for col, _ in cmap.required()}
    return to_examples(table, cmap, where, split, policy, names)
