"""Memory measurement and the CPU allocator setting used for training."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from mtexp.resources import SavedActivations
from mtexp.train import run
from tests.test_budget import config

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


def test_saved_activations_count_each_storage_once_and_leave_parameters_out():
    layer = torch.nn.Linear(256, 256)
    inputs = torch.randn(64, 256, requires_grad=True)
    with SavedActivations(SavedActivations.storages_of(layer.parameters())) as saved:
        hidden = layer(inputs)
        output = (hidden * hidden).sum()  # saves `hidden` (twice, one storage)
    output.backward()
    assert saved.bytes == 2 * 64 * 256 * 4  # the input and `hidden`, not the weight


def test_training_memory_is_the_same_whatever_ran_before(tmp_path):
    """Two scenarios training the same parameters report the same memory, in either order, and
    a frozen head barely changes it (the figure once depended on the job's place in a sweep)."""
    order = [("none", ()), ("head_a", ()), ("head_b", ("freezing.head=A",)), ("none", ())]
    memory = [run(config(f"freezing={name}", "trainer.epochs=1", *extra), tmp_path / str(i))["cost"]
              for i, (name, extra) in enumerate(order)]
    totals = [cost["train_memory_mb"] for cost in memory]
    assert totals[0] == totals[3] > 0  # `none` first in the process, and after the others
    assert totals[1] == totals[2]  # the same parameters train under head_a and head_b with head=A
    assert abs(totals[0] - totals[1]) < 0.05 * totals[0]
    parts = ("gradients", "optimizer", "activations", "cache")
    for cost in memory:
        assert sum(cost[f"{part}_memory_mb"] for part in parts) == pytest.approx(cost["train_memory_mb"],
                                                                                 abs=0.3)
        assert cost["optimizer_memory_mb"] == pytest.approx(2 * cost["gradients_memory_mb"], rel=0.01)
