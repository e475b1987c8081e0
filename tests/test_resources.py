"""Memory measurement and the CPU allocator setting used for training."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from mtexp.resources import PeakMemory

FAULTS_PER_ALLOCATION = """
import resource, torch
from mtexp.resources import reuse_freed_memory

def faults_per_allocation(rounds: int = 10) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        gradient = torch.zeros(30522, 384)  # a word-embedding gradient, 47 MB
        del gradient
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds

default = faults_per_allocation()
applied = reuse_freed_memory()
print(default, faults_per_allocation(), applied)
"""


def test_peak_memory_sees_an_allocation_inside_the_context():
    with PeakMemory(torch.device("cpu")) as memory:
        block = torch.ones(128 * 2**20 // 4)
        block.add_(1.0)
        del block
    assert memory.increase_mb >= 100
    assert memory.peak_mb >= memory.increase_mb


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_reused_freed_memory_stops_page_faults_on_large_allocations():
    done = subprocess.run([sys.executable, "-c", FAULTS_PER_ALLOCATION], capture_output=True, text=True,
                          check=True, timeout=120)
    default, reused, applied = done.stdout.split()
    assert applied == "True"
    assert float(reused) < 0.25 * float(default)
