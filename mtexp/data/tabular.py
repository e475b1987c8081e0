"""Tabular files (CSV, TSV, JSONL, Parquet) read with pandas: a text column and label columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mtexp.data.columns import ColumnMap, ColumnSource, check_columns, to_examples
from mtexp.data.source import ReadContext
from mtexp.data.textio import FileSource, check_utf8, corpus_name, split_files
from mtexp.data.types import Corpus, DataError

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass
class TabularSource(FileSource, ColumnSource):
    """`source: tabular`: CSV, TSV, JSONL or Parquet files, one per split (or one to carve)."""

    format: str | None = None  # csv | tsv | jsonl | json | parquet; null: from the file extension
    scheme: str = "iob2"


def read_tabular(src: TabularSource, ctx: ReadContext) -> Corpus:
    """Read one file per split; text is split on whitespace into words."""
    key = ctx.key
    cmap = ColumnMap.from_source(src, key)
    files = split_files(src, key, tuple(FORMATS))
    splits = {}
    for split, path in files.items():
        frame = read_frame(path, src.format, f"{key}.format")
        check_columns(list(frame.columns), cmap, str(path), key)
        table = {col: frame[col].tolist() for col, _ in cmap.required()}
        splits[split] = to_examples(table, cmap, str(path), split, ctx.policy)
    return Corpus(name=corpus_name(src, files), tasks=cmap.tasks, splits=splits)


def file_format(path: Path, fmt: str | None, key: str) -> str:
    if fmt:
        if fmt not in set(FORMATS.values()):
            raise DataError(f"{key}: unknown format {fmt!r}; use one of {sorted(set(FORMATS.values()))}")
        return fmt
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: cannot tell the format from {suffix!r}; set {key}")
    return FORMATS[suffix]


def read_frame(path: Path, fmt: str | None, key: str) -> pd.DataFrame:
    """Read a table with every text cell kept as written (no NA guessing for CSV/TSV)."""
    fmt = file_format(path, fmt, key)
    if fmt != "parquet":
        check_utf8(path)
    try:
        if fmt in ("csv", "tsv"):
            sep = "," if fmt == "csv" else "\t"
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
        if fmt in ("jsonl", "json"):
            return pd.read_json(path, lines=fmt == "jsonl", dtype=False, encoding="utf-8")
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty; expected a header and rows") from None
    except (ValueError, pd.errors.ParserError, OSError) as err:
        raise DataError(f"{path}: cannot read as {fmt}: {err}") from None
