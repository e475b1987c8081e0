"""Memory measurement and the CPU allocator setting used for training."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

FAULTS_PER_ALLOCATION = """
import resource, torch
from mtexp.resources import reuse_freed_memory

def faults_per_allocation(rounds: int = 20) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        gradient = torch.zeros(30522, 384)  # a word-embedding gradient, 47 MB
        del gradient
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds

default = faults_per_allocation()
applied = reuse_freed_memory()
print(default, faults_per_allocation(), applied)
"""


def run_python(code: str) -> list[str]:
    """Run `code` in a fresh interpreter: no memory kept by earlier tests, the allocator's defaults."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=120)
    return done.stdout.split()


PEAK_OF_A_BLOCK = """
import time, torch
from mtexp.resources import PeakMemory

with PeakMemory(torch.device("cpu")) as memory:
    block = torch.ones(128 * 2**20 // 4)
    time.sleep(0.1)
    del block
print(memory.increase_mb, memory.peak_mb)
"""


def test_peak_memory_sees_an_allocation_inside_the_context():
    increase, peak = run_python(PEAK_OF_A_BLOCK)
    assert float(increase) >= 100
    assert float(peak) >= float(increase)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_reused_freed_memory_stops_page_faults_on_large_allocations():
    default, reused, applied = run_python(FAULTS_PER_ALLOCATION)
    assert applied == "True"
    # Usually ~10x fewer; where the heap cannot grow in place some rounds still fault (seen: 2x).
    assert float(reused) < 0.6 * float(default)
