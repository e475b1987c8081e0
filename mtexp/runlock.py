"""One run at a time in a run directory: a lock file held while the run lives.

The lock is an `flock` on `<run dir>/.lock`, which also records the holder (pid, host, start):
the kernel releases it when the holder exits, however it ends (`kill -9` included), so the lock
of a dead run is simply taken over. Where the file system has no `flock`, the recorded pid
decides: a lock whose pid is no longer alive on this host is taken over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from mtexp.rundir import LOCK_FILE, now_iso


class RunDirBusy(RuntimeError):
    """Another live run holds the run directory; the message names it and the holder's pid."""


class RunLock:
    """The lock of one run directory: `with RunLock(folder): ...` (the folder is created)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise `RunDirBusy` at once when a live run holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not self._lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                raise RunDirBusy(_busy_message(self.folder, holder))
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed the file on release: lock the new one
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}
        os.write(fd, json.dumps(record).encode())
        self.fd = fd

    def try_acquire(self) -> RunDirBusy | None:
        """Take the lock and return None, or return (not raise) the `RunDirBusy` that says who
        holds it."""
        try:
            self.acquire()
        except RunDirBusy as busy:
            return busy
        return None

    def release(self) -> None:
        """Remove the lock file (while still holding it) and let go."""
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink()
        finally:
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def _lock(fd: int) -> bool:
        """True when this process now holds `fd`'s lock; False when a live run does."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as error:  # no flock on this file system: the recorded pid decides
            if error.errno not in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            return not _holder_alive(_read_holder(fd))


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _holder_alive(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True  # a process on another host cannot be checked from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _busy_message(folder: Path, holder: dict[str, Any]) -> str:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}"
    return (f"run directory {folder} is in use by another run ({who}): wait for it to end, or "
            f"choose another hydra.run.dir")
