"""Which precision a run or `encode()` uses: `auto` picks bf16 where the hardware runs it natively
(a CPU with AVX-512 BF16 or AMX, an Arm CPU with BF16 on Linux, a CUDA GPU that supports it),
fp32 elsewhere (macOS included: it has no /proc/cpuinfo to tell).

bf16 means bfloat16 autocast around the encoder; parameters, optimizer state and returned
embeddings stay float32. On hardware without bf16 units autocast would emulate it, slower than
fp32, so `auto` does not pick it there.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 (AVX-512, AMX); aarch64
CPUINFO = Path("/proc/cpuinfo")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """`fp32` or `bf16`: `precision` itself, or for `auto` what `device` runs natively."""
    if check_precision(precision) != "auto":
        return precision
    return "bf16" if native_bf16(torch.device(device)) else "fp32"


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 arithmetic units (not emulation)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return bool(cpu_flags() & CPU_BF16_FLAGS)
    return False


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (`flags` on x86, `Features` on Arm); empty
    where there is no such file."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)

