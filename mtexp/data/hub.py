"""Hugging Face datasets by name (`datasets.load_dataset`), with a column mapping."""

from __future__ import annotations

from collections.abc import Mapping

from mtexp.data.bio import BioPolicy
from mtexp.data.columns import COLUMN_KEYS, ColumnMap, check_columns, to_examples
from mtexp.data.textio import resolve_path
from mtexp.data.types import SPLITS, Corpus, DataError

KEYS = {
    "source", "name", "dataset", "config_name", "data_files", "revision", "split_names",
    "cache_dir", "scheme", *COLUMN_KEYS,
}
DEFAULT_SPLIT_NAMES = {"train": "train", "dev": "validation", "test": "test"}


def load_hub(src: dict, key: str, policy: BioPolicy) -> Corpus:
    """`load_dataset(dataset, config_name, data_files=..)`; ClassLabel ids become their names."""
    import datasets

    name = src.get("dataset")
    if not name:
        raise DataError(f"{key}.dataset: name the dataset (a hub id, or json/csv/parquet)")
    cmap = ColumnMap.from_source(src, key)
    kwargs = {"revision": src.get("revision"), "data_files": _data_files(src, key)}
    if src.get("cache_dir"):
        kwargs["cache_dir"] = str(resolve_path(src["cache_dir"], f"{key}.cache_dir", False))
    try:
        loaded = datasets.load_dataset(name, src.get("config_name"), **kwargs)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        raise DataError(f"{key}: load_dataset({name!r}) failed: {err}") from None
    names = {**DEFAULT_SPLIT_NAMES, **(src.get("split_names") or {})}
    splits = {}
    for split in SPLITS:
        hub_split = names.get(split)
        if hub_split and hub_split in loaded:
            splits[split] = _split_examples(loaded[hub_split], cmap, f"{name}[{hub_split}]",
                                            split, policy, key)
    if "train" not in splits:
        raise DataError(
            f"{key}.split_names: no train split {names['train']!r} in {name}; "
            f"it has {list(loaded)}"
        )
    corpus_name = src.get("name") or name.replace("/", "_")
    return Corpus(name=corpus_name, tasks=cmap.tasks, splits=splits)


def _data_files(src: dict, key: str) -> object:
    files = src.get("data_files")
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
