"""The `slurm` launcher preset on a real single-node Slurm cluster started here: a 2-job sweep,
one job requeued mid-run with `scontrol requeue`, which resumes from its checkpoint to the metrics
of an uninterrupted run; `mtexp-report` then covers both jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, require
from slurm_cluster import SlurmCluster, missing_tools

from mtexp.results import load_runs
from mtexp.rundir import CHECKPOINT_DIR, LAST

pytestmark = pytest.mark.slow
RUN = ("backbone=tiny", "data.size=2000", "trainer=quick", "trainer.epochs=4", "trainer.threads=1",
       "eval.cka_sentences=0", "eval.train_subset=0")
LAUNCHER = ("+experiment=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20")
TIMING = ("seconds", "memory", "samples_per_second")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    missing = missing_tools()
    require(not missing, f"Slurm/munge not installed (missing {missing}; Debian: slurm-wlm munge)")
    require(os.geteuid() == 0, "a local Slurm cluster needs root for slurmd")
    slurm = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        slurm.start()
        yield slurm
    finally:
        slurm.stop()


def train_env(slurm: SlurmCluster, cache: Path) -> dict[str, str]:
    return {**slurm.env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "MTEXP_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


def wait_for(condition, timeout: float, process: subprocess.Popen, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert process.poll() is None, f"the sweep ended while waiting for {what}"
        time.sleep(0.1)
    raise TimeoutError(what)


def array_task_id(sweep: Path, task: int) -> str | None:
    """`<array job id>_<task>` from submitit's folder of that task's logs."""
    folders = [p.name for p in (sweep / ".submitit").glob(f"*_{task}") if p.is_dir()]
    return folders[0] if folders else None


def requeue_now(slurm: SlurmCluster, job: str) -> None:
    """Requeue a running job, then let it start again at once (Slurm holds requeued jobs ~2 min)."""
    slurm.run("scontrol", "requeue", job)
    deadline = time.monotonic() + 60
    while "PENDING" not in slurm.run("scontrol", "show", "job", job).stdout:
        assert time.monotonic() < deadline, "the requeued job never went back to pending"
        time.sleep(0.2)
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")


def metrics_without_timing(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["cost"] = {k: v for k, v in metrics["cost"].items() if not any(t in k for t in TIMING)}
    return metrics


def test_requeued_slurm_job_resumes_to_uninterrupted_metrics(cluster: SlurmCluster, tmp_path: Path) -> None:
    sweep, env = tmp_path / "sweep", train_env(cluster, tmp_path / "cache")
    command = [sys.executable, "-m", "mtexp.train", "-m", *LAUNCHER, *RUN, "freezing=gradual", "seed=0,1",
               f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        last = sweep / "0_seed0" / CHECKPOINT_DIR / LAST
        wait_for(last.is_file, 600, process, "job 0's first checkpoint")
        interrupted = torch.load(last, map_location="cpu", weights_only=False)["state"]
        job = wait_for(lambda: array_task_id(sweep, 0), 30, process, "job 0's Slurm id")
        assert "JobState=RUNNING" in cluster.run("scontrol", "show", "job", job).stdout
        assert not (sweep / "0_seed0" / "metrics.json").exists()
        requeue_now(cluster, job)
        output, _ = process.communicate(timeout=900)
    finally:
        process.kill()
    assert process.returncode == 0, output[-3000:] + cluster.logs()
    assert "Restarts=1" in cluster.run("scontrol", "show", "job", job).stdout
    assert "DUE TO JOB REQUEUE" in cluster.logs()  # killed while running, not after it ended

    run = sweep / "0_seed0"
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert interrupted["epoch"] < 4, "the job finished before it could be requeued"
    before = pd.DataFrame(interrupted["history"])  # the first attempt's epochs are kept, not rerun
    pd.testing.assert_frame_equal(history.iloc[: len(before)][before.columns], before, check_dtype=False)

    reference = tmp_path / "uninterrupted"
    done = subprocess.run([sys.executable, "-m", "mtexp.train", *RUN, "freezing=gradual", "seed=0",
                           f"hydra.run.dir={reference}"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert metrics_without_timing(run) == metrics_without_timing(reference)

    runs = load_runs(sweep)
    assert sorted(runs["seed"]) == [0, 1] and set(runs["status"]) == {"completed"}
    report = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "mtexp.report", str(sweep), "--out", str(report)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = pd.read_csv(report / "summary.csv")
    assert summary["n"].sum() == 2 and summary["failed"].sum() == 0
