"""File helpers shared by the sources: path resolution, strict UTF-8 reading, split discovery."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mtexp.data.source import SourceConfig
from mtexp.data.types import SPLITS, DataError

# File stems accepted for each split when a source points at a folder.
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "dev": ("dev", "valid", "validation", "val"),
    "test": ("test",),
}


def original_cwd() -> Path:
    """The directory the user launched from (Hydra changes cwd inside a run)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        if HydraConfig.initialized():
            return Path(get_original_cwd())
    except (ImportError, ValueError):
        pass
    return Path.cwd()


def resolve_path(path: str | os.PathLike, key: str, must_exist: bool = True) -> Path:
    """Resolve `path` against the original cwd; `key` names the config entry for errors."""
    resolved = Path(os.path.expanduser(str(path)))
    if not resolved.is_absolute():
        resolved = original_cwd() / resolved
    if must_exist and not resolved.exists():
        raise DataError(f"{key}: path not found: {resolved}")
    return resolved


def read_text(path: Path) -> str:
    """Read a file as strict UTF-8; a decode failure names the file, line and byte offset."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: not valid UTF-8 (line {line}, byte {err.start}: {err.reason}); "
            "re-encode the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def check_utf8(path: Path) -> None:
    """Fail early with a clear message when a text file is not UTF-8."""
    read_text(path)


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file without line ends; an empty file is an error."""
    lines = read_text(path).splitlines()
    if not lines or all(not line.strip() for line in lines):
        raise DataError(f"{path}: file is empty; expected one entry per line")
    return lines


def find_split_files(folder: Path, suffixes: Iterable[str], key: str) -> dict[str, Path]:
    """Split name -> file in `folder`, matching `<alias><suffix>` (e.g. `train.csv`, `valid.txt`)."""
    suffixes = tuple(suffixes)
    found: dict[str, Path] = {}
    for split in SPLITS:
        for alias in SPLIT_ALIASES[split]:
            hits = [folder / f"{alias}{suffix}" for suffix in suffixes]
            hits = [hit for hit in hits if hit.is_file()]
            if hits:
                found[split] = hits[0]
                break
    if "train" not in found:
        names = ", ".join(f"train{s}" for s in suffixes)
        raise DataError(f"{key}: no train file in {folder} (looked for {names})")
    return found


@dataclass
class FileSource(SourceConfig):
    """A source read from files: `path` (a folder of split files, or one file) or `files`."""

    path: str | None = None
    files: dict[str, str] | None = None  # split -> file, e.g. {train: a.csv, test: b.csv}


def split_files(src: FileSource, key: str, suffixes: Iterable[str]) -> dict[str, Path]:
    """Split files of a source: `files: {train: .., dev: .., test: ..}`, a folder, or one file."""
    files = src.files
    if files:
        unknown = set(files) - set(SPLITS)
        if unknown:
            raise DataError(f"{key}.files: unknown split(s) {sorted(unknown)}; use {list(SPLITS)}")
        if "train" not in files:
            raise DataError(f"{key}.files: a train file is required")
        return {s: resolve_path(p, f"{key}.files.{s}") for s, p in files.items() if p}
    if not src.path:
        raise DataError(f"{key}: set `path` (a folder or a file) or `files`")
    path = resolve_path(src.path, f"{key}.path")
    if path.is_dir():
        return find_split_files(path, suffixes, f"{key}.path")
    return {"train": path}


def corpus_name(src: FileSource, files: dict[str, Path]) -> str:
    """`name` from the config, else the source folder's name, else the train file's stem."""
    if src.name:
        return str(src.name)
    train = files["train"]
    if src.files or resolve_path(src.path, "path", must_exist=False).is_dir():
        return train.parent.name
    return train.stem
