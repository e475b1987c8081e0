"""Peak memory of a phase of work: the GPU allocator's peak, or resident memory sampled on the CPU."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from types import TracebackType

import torch

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def reuse_freed_memory(limit_mb: int = 256) -> bool:
    """Let glibc keep and reuse freed blocks below `limit_mb` instead of returning them to the OS.

    By default glibc maps every block above 32 MiB afresh and unmaps it when freed, so a training
    step that allocates a large tensor (MiniLM's 30,522 x 384 word-embedding gradient is 47 MB)
    page-faults through all of it again, every step. Returns True where the setting applied.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    limit = limit_mb * MB
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, limit))


def resident_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


class PeakMemory:
    """Tracks the peak memory while the context is open.

    `peak_mb` is the absolute peak; `increase_mb` the peak above the level at entry, which is the
    memory the phase itself needed (weights loaded before it are not counted).
    """

    def __init__(self, device: torch.device, interval_s: float = 0.02) -> None:
        self.device = device
        self.interval_s = interval_s
        self.start_bytes = 0
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.start_bytes = resident_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self.peak_bytes = self.start_bytes
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, resident_bytes())
            time.sleep(self.interval_s)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, resident_bytes())

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / MB

    @property
    def increase_mb(self) -> float:
        return max(self.peak_bytes - self.start_bytes, 0) / MB
