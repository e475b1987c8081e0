"""Atomic file writes: a reader never sees a half-written file.

Each file is written to a temporary name beside its target and renamed into place. The result
gets the permissions a plain `open(path, "w")` would give it: those of the file it replaces, or
else `0o666` less the process umask (temporary files start private, at `0o600`).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

FILE_MODE = 0o666  # what open() asks for; the umask takes bits away
DIRECTORY_MODE = 0o777  # what mkdir() asks for
_UMASK_LOCK = threading.Lock()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write(Path(path), lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def atomic_save(path: str | Path, save: Callable[[str], None]) -> None:
    """Run `save(temp_path)` (e.g. torch.save, safetensors) and move the result into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        save(temp_name)
        os.chmod(temp_name, _mode_for(path))
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def atomic_save_folder(folder: str | Path, save: Callable[[Path], None]) -> None:
    """Run `save(temp_folder)` (e.g. `save_pretrained`) and let the result replace `folder`."""
    folder = Path(folder)
    temp = make_temp_dir(folder.parent, f".{folder.name}.")
    try:
        save(temp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(temp, folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permission bits of a file that `open(path, "w")` creates: 0o666 less the umask."""
    return FILE_MODE & ~current_umask()


def new_directory_mode() -> int:
    """The permission bits of a directory that `mkdir` creates: 0o777 less the umask."""
    return DIRECTORY_MODE & ~current_umask()


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A fresh directory in `parent` (made if absent) with the permissions `mkdir` would give,
    where `tempfile.mkdtemp` makes it private (0o700)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=".tmp"))
    os.chmod(temp, new_directory_mode())
    return temp


def _mode_for(path: Path) -> int:
    """The mode of the file `path` replaces, else that of a newly created file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return new_file_mode()


def _atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    def save(temp_name: str) -> None:
        with open(temp_name, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_save(path, save)
