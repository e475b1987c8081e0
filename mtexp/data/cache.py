"""The on-disk cache of tokenised features: keys (tokenizer, max_length, alignment option and
data content) and the entries they name, written atomically and checked against a manifest.

The entry machinery (`commit_entry`, `load_entry`, `entry_lock`, `discard_entry`) is shared
with the frozen-feature store (`mtexp.feature_store`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import datasets
import pyarrow

from mtexp.data.types import MultiTaskData
from mtexp.io import make_temp_dir

try:
    import fcntl
except ImportError:  # not on Windows: the rename alone keeps entries whole
    fcntl = None

log = logging.getLogger(__name__)
T = TypeVar("T")

FORMAT_VERSION = 3  # 3: entries carry a manifest


def tokenizer_hash(tokenizer: Any) -> str:
    """Hash of the fast tokenizer's serialisation (vocab, normaliser, pre-tokeniser), without
    the truncation/padding state that calling the tokenizer changes."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
    else:
        state = tokenizer.get_vocab()
    text = json.dumps(state, sort_keys=True, ensure_ascii=False)
    extra = json.dumps([type(tokenizer).__name__, tokenizer.all_special_tokens])
    return hashlib.sha256((text + extra).encode("utf-8")).hexdigest()


def data_hash(data: MultiTaskData) -> str:
    """Hash of every task's labels and every example's words and labels, in order."""
    digest = hashlib.sha256()
    tasks = [[t.name, t.kind, list(t.labels)] for t in data.tasks]
    digest.update(json.dumps(tasks).encode("utf-8"))
    for corpus in data.corpora:
        digest.update(json.dumps([corpus.name, list(corpus.tasks)]).encode("utf-8"))
        for split, examples in corpus.splits.items():
            digest.update(f"\n{split}:{len(examples)}\n".encode())
            for ex in examples:
                row = [ex.words, [ex.labels[t] for t in corpus.tasks]]
                digest.update(json.dumps(row, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def cache_key(
    data: MultiTaskData, tokenizer: Any, max_length: int, label_all_tokens: bool
) -> tuple[str, dict[str, Any]]:
    """The folder name of a feature cache and the metadata stored beside it."""
    meta = {
        "version": FORMAT_VERSION,
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "max_length": int(max_length),
        "label_all_tokens": bool(label_all_tokens),
        "data": data.name,
        "data_hash": data_hash(data),
    }
    parts = {k: v for k, v in meta.items() if k not in ("tokenizer", "data")}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:24]
    return f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', data.name)}-{key}", meta


# --- entries on disk -------------------------------------------------------------------------
# An entry is a folder `<root>/<key>` holding one `datasets` folder per (corpus, split), then
# meta.json, then the manifest (every file's size and sha256, written last). It is written under
# a temporary name and renamed into place, so a reader sees a whole entry or none; the manifest
# catches damage done afterwards (a truncated copy, a full disk, a bad sector).

META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
TEMP_PREFIX = ".tmp-"  # an entry being written: .tmp-<key>.<host>.<pid>.<random>.tmp
DISCARD_PREFIX = ".damaged-"  # a damaged entry moved aside before it is deleted
LOCK_PREFIX = ".lock-"  # the lock file of an entry being built (`entry_lock`)
STALE_SECONDS = 30 * 60  # a temporary folder this old is an orphan, whoever wrote it
CHUNK = 1 << 20

Built = dict[tuple[str, str], datasets.Dataset]


class DamagedEntry(Exception):
    """A cache entry that cannot be trusted; the message says which file and what is wrong."""

    def __init__(self, message: str, build_id: str | None = None) -> None:
        super().__init__(message)
        self.build_id = build_id


def read_entry(entry: Path) -> Built | None:
    """The datasets of a cache entry, None when there is none; `DamagedEntry` when the entry
    fails its manifest or does not load."""

    def load_parts(folder: Path, meta: dict[str, Any]) -> Built:
        return {(corpus, split): datasets.load_from_disk(str(folder / part))
                for part, (corpus, split) in meta["parts"].items()}

    return load_entry(entry, load_parts)


def verify_entry(entry: Path) -> str:
    """Check every file the manifest lists against its size and sha256; returns the build id."""
    try:
        manifest = json.loads((entry / MANIFEST_FILE).read_text())
        build_id, files = str(manifest["build"]), dict(manifest["files"])
    except FileNotFoundError:
        raise DamagedEntry(f"{MANIFEST_FILE} is missing (an unfinished or foreign folder)") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DamagedEntry(f"{MANIFEST_FILE} is unreadable ({error})") from None
    for name, expected in files.items():
        path = entry / name
        if not path.is_file():
            raise DamagedEntry(f"{path} is missing", build_id)
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise DamagedEntry(f"{path} has {size} bytes, the manifest says {expected['bytes']}", build_id)
        if _sha256(path) != expected["sha256"]:
            raise DamagedEntry(f"{path} does not match its checksum", build_id)
    return build_id


def write_entry(root: Path, key: str, built: Built, meta: dict[str, Any]) -> Path:
    """Write `built` as the entry `<root>/<key>` and return its path.

    When another process commits the same entry first, its entry is kept and used. Orphaned
    temporary folders of earlier writers (killed, or gone) are removed first.
    """

    def save_parts(folder: Path) -> dict[str, Any]:
        parts = {}
        for n, ((corpus, split), ds) in enumerate(sorted(built.items())):
            parts[f"part{n}"] = [corpus, split]
            ds.save_to_disk(str(folder / f"part{n}"))
        return {**meta, "parts": parts}

    return commit_entry(root, key, save_parts)


def commit_entry(root: Path, key: str, save: Callable[[Path], dict[str, Any]]) -> Path:
    """Write an entry `<root>/<key>` whole or not at all and return its path.

    `save(folder)` writes the entry's files into a temporary folder and returns its metadata
    (meta.json); the manifest is written last and the folder renamed into place. When another
    process commits the same entry first, its entry is kept and used.
    """
    entry = root / key
    root.mkdir(parents=True, exist_ok=True)
    remove_orphans(root)
    temp = make_temp_dir(root, f"{TEMP_PREFIX}{key}.{_host()}.{os.getpid()}.")
    try:
        meta = save(temp)
        (temp / META_FILE).write_text(json.dumps(meta, indent=1))
        _write_manifest(temp)
        os.rename(temp, entry)
        log.info("feature cache written: %s", entry)
    except OSError:
        if not (entry / MANIFEST_FILE).is_file():
            raise
        log.info("feature cache %s was written by another process first; using it", entry)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return entry


def load_entry(entry: Path, load: Callable[[Path, dict[str, Any]], T]) -> T | None:
    """`load(entry, meta)` of an entry that passes its manifest, None when there is none;
    `DamagedEntry` when the entry fails its manifest or does not load."""
    if not entry.exists():
        return None
    build_id = verify_entry(entry)
    try:
        return load(entry, json.loads((entry / META_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, pyarrow.ArrowException) as error:
        raise DamagedEntry(f"it does not load: {type(error).__name__}: {error}", build_id) from None


@contextmanager
def entry_lock(root: Path, key: str) -> Iterator[None]:
    """Hold an exclusive lock on the entry `<root>/<key>` (an advisory `flock` on a lock file
    beside it), so that processes wanting the same entry build it once: the others wait, then
    read it. The lock goes with its holder, killed or not; where `flock` is missing the rename
    in `commit_entry` still leaves one whole entry."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{LOCK_PREFIX}{key}", "a+b") as handle:
        if fcntl is None:
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.info("waiting for another process to finish the cache entry %s", root / key)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def discard_entry(entry: Path, build_id: str | None) -> None:
    """Move a damaged entry aside and delete it, unless what was moved is a fresh entry that
    another process committed after `build_id` was read (then it is put back)."""
    aside = entry.parent / f"{DISCARD_PREFIX}{entry.name}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        os.rename(entry, aside)
    except FileNotFoundError:
        return  # another process moved it first
    if _build_id(aside) not in (None, build_id):
        try:
            os.rename(aside, entry)
            return
        except OSError:
            pass  # yet another entry is in place: this one is a spare
    shutil.rmtree(aside, ignore_errors=True)


def remove_orphans(root: Path, stale_seconds: float = STALE_SECONDS) -> list[Path]:
    """Delete the temporary folders in `root` whose writer is gone (same host, process no longer
    running) or that are older than `stale_seconds`; returns what was deleted."""
    removed = []
    now = time.time()
    for path in root.iterdir():
        if not path.name.startswith((TEMP_PREFIX, DISCARD_PREFIX)) or not path.is_dir():
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        host, pid = _writer(path.name)
        gone = host == _host() and pid is not None and not _running(pid)
        if gone or age > stale_seconds:
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed an orphaned feature-cache folder: %s (%s)", path,
                     "its writer is gone" if gone else f"{age / 60:.0f} minutes old")
            removed.append(path)
    return removed


def _write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    listing = {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files
    }
    manifest = {"build": uuid.uuid4().hex, "files": listing}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def _build_id(entry: Path) -> str | None:
    try:
        return str(json.loads((entry / MANIFEST_FILE).read_text())["build"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _writer(name: str) -> tuple[str | None, int | None]:
    """(host, pid) from a temporary folder's name; (None, None) for names of another form."""
    fields = name.removesuffix(".tmp").rsplit(".", 3)
    if len(fields) != 4 or not fields[2].isdigit():
        return None, None
    return fields[1], int(fields[2])


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
