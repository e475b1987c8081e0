"""torchrun with two CPU processes (gloo) matches single-process training within tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import require_module
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["backbone=tiny", "data.size=400", "trainer=quick", "eval.cka_sentences=0", "eval.train_subset=0"]
# Dropout masks differ between one process and two, and each rank averages its own tokens' loss,
# so the runs agree closely but not bitwise.
LOSS_RTOL, METRIC_ATOL, WEIGHT_ATOL = 0.01, 0.02, 5e-3


def train(command: list[str], run_dir: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, *OVERRIDES, f"hydra.run.dir={run_dir}"], cwd=REPO_ROOT, env=env,
                   check=True, capture_output=True, timeout=600)


def test_two_processes_match_one(tmp_path):
    require_module("torch.distributed.run")
    single, double = tmp_path / "single", tmp_path / "double"
    train([sys.executable, "-m", "mtexp.train"], single)
    train([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "mtexp.train"], double)
    assert json.loads((double / "env.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["double", "single"]
    one, two = pd.read_csv(single / "history.csv"), pd.read_csv(double / "history.csv")
    assert one["step"].tolist() == two["step"].tolist()
    assert ((one["train.loss"] - two["train.loss"]).abs() <= LOSS_RTOL * one["train.loss"]).all()
    metrics_one = json.loads((single / "metrics.json").read_text())
    metrics_two = json.loads((double / "metrics.json").read_text())
    for split in ("dev", "test"):
        assert abs(metrics_one[split]["score"] - metrics_two[split]["score"]) <= METRIC_ATOL
    weights_one = load_file(single / "model.safetensors")
    weights_two = load_file(double / "model.safetensors")
    assert max((weights_one[k] - weights_two[k]).abs().max().item() for k in weights_one) <= WEIGHT_ATOL
