"""Sweep presets (sweeps/), launcher presets, and real multiruns on the tiny backbone:
joblib with a failing job, submitit's local executor, and a requeued job that resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from mtexp.config import validate
from mtexp.results import load_runs
from mtexp.rundir import CHECKPOINT_DIR, LAST

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "sweeps"
CONF = REPO / "conf"
PRESETS = sorted(p.stem for p in SWEEPS.glob("*.yaml"))
TUNE_PRESETS = [name for name in PRESETS if name.startswith("tune_")]  # mtexp-tune presets
TRAIN_PRESETS = [name for name in PRESETS if name not in TUNE_PRESETS]
TINY = ("backbone=tiny", "data.size=400", "trainer=quick", "eval.cka_sentences=16", "eval.train_subset=0")
RUN_FILES = ("config.yaml", "overrides.yaml", "choices.yaml", "status.json", ".hydra")
COMPLETED_FILES = (*RUN_FILES, "metrics.json", "history.csv", "env.json", "labels.json",
                   "model.safetensors", f"{CHECKPOINT_DIR}/{LAST}")


# ----- helpers --------------------------------------------------------------------------------
def compose_preset(name: str, overrides: Sequence[str] = (), hydra: bool = False) -> DictConfig:
    """A sweeps/ preset composed as `mtexp-train -cd sweeps -cn <name>` would compose it."""
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        return compose(name, overrides=[f"hydra.searchpath=[file://{CONF}]", *overrides],
                       return_hydra_config=hydra)


def expand(name: str, sweep: Sequence[str] = ()) -> list[list[str]]:
    """The jobs' override lists of `mtexp-train -m -cd sweeps -cn <name> <sweep>` (BasicSweeper)."""
    params = compose_preset(name, hydra=True).hydra.sweeper.params
    arguments = [f"{key}={value}" for key, value in params.items()] + list(sweep)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


def documented_runs() -> dict[str, int]:
    """preset -> run count from the table in sweeps/README.md."""
    table = re.findall(r"^\| `(\w+)` \|[^|]*\| (\d+)", (SWEEPS / "README.md").read_text(), re.M)
    return {name: int(runs) for name, runs in table}


def env(cache: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "MTEXP_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mtexp.train", "-m", *args]


def mtexp_train(args: Sequence[str], cache: Path, timeout: int = 600,
                returncode: int = 0) -> subprocess.CompletedProcess:
    """mtexp-train with `args`; its exit status must be `returncode` (1: a job failed)."""
    done = subprocess.run(train_command(*args), cwd=REPO, env=env(cache), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == returncode, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def mtexp_report(args: Sequence[str]) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("mtexp-report")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mtexp.report"]
    done = subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def run_dirs(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if p.is_dir() and (p / ".hydra").is_dir()}


def read_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def check_run_dir(run: Path, files: Sequence[str]) -> None:
    """Contract files present; the name is `<job number>_seed<seed>` of this very job."""
    missing = [f for f in files if not (run / f).exists()]
    assert not missing, f"{run.name}: missing {missing}"
    job_num = read_yaml(run / ".hydra" / "hydra.yaml")["hydra"]["job"]["num"]
    assert run.name == f"{job_num}_seed{read_yaml(run / 'config.yaml')['seed']}"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feature_cache")


# ----- presets: composition and job counts (fast) -----------------------------------------------
def test_presets_are_documented() -> None:
    assert {"freezing", "lr", "learning_curve", "schedule"} <= set(TRAIN_PRESETS)
    assert {"tune_freezing", "tune_lr", "tune_learning_curve"} <= set(TUNE_PRESETS)
    assert set(documented_runs()) == set(PRESETS)
    readme = (SWEEPS / "README.md").read_text()
    for name in PRESETS:
        command = "mtexp-tune" if name in TUNE_PRESETS else "mtexp-train"
        assert f"{command} -m -cd sweeps -cn {name}" in readme


@pytest.mark.parametrize("name", TRAIN_PRESETS)
def test_preset_expands_to_documented_valid_jobs(name: str) -> None:
    jobs = expand(name)
    assert len(jobs) == documented_runs()[name]
    assert len({tuple(sorted(job)) for job in jobs}) == len(jobs)
    seeds = {job_value(job, "seed") for job in jobs}
    assert seeds == {"0", "1", "2"}
    for job in jobs:
        cfg = compose_preset(name, job)
        run = validate(cfg)
        assert run.seed == int(job_value(job, "seed"))


def job_value(job: Sequence[str], key: str) -> str:
    return next(item.split("=", 1)[1] for item in job if item.split("=", 1)[0] == key)


@pytest.mark.parametrize("name", PRESETS)
def test_sweep_dir_names_preset_data_and_time(name: str) -> None:
    cfg = compose_preset(name, ["data=snips"], hydra=True)
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert sweep["dir"].startswith(f"multirun/{name}_${{data.name}}/${{now:")
    if name in TUNE_PRESETS:  # one folder per configuration, its seeds inside
        assert sweep["subdir"].startswith("${hydra.job.num}_")
    else:
        assert sweep["subdir"] == "${hydra.job.num}_seed${seed}"
    assert OmegaConf.select(cfg, "data.name") == "snips"


@pytest.mark.parametrize("name", TUNE_PRESETS)
def test_tune_preset_expands_to_documented_configurations_under_the_fair_protocol(name: str) -> None:
    from mtexp.tune import TuneConfig, search_space

    jobs = expand(name)
    assert len(jobs) == documented_runs()[name]
    assert all("seed" not in dict(item.split("=", 1) for item in job) for job in jobs)
    for job in jobs:
        cfg = compose_preset(name, job)
        tune = TuneConfig(**OmegaConf.to_container(cfg.tune))
        assert tune.seeds == [0, 1, 2] and tune.pruner == "median" and tune.trials >= 10
        with open_dict(cfg):
            cfg.pop("tune")
        run = validate(cfg)
        assert run.trainer.budget.name == "converge" and run.trainer.budget.min_steps >= 300
        space = search_space(run)
        assert bool(space) == run.freezing.scenario.anything_trains


def test_command_line_sweep_replaces_preset_values() -> None:
    jobs = expand("freezing", ["seed=0,1,2,3,4"])
    assert len(jobs) == 9 * 5
    assert len(expand("freezing", ["freezing=none,backbone"])) == 2 * 3


def test_lr_preset_decay_values() -> None:
    decay = {job_value(job, "optim"): compose_preset("lr", job).optim.layer_decay for job in expand("lr")}
    assert decay["adamw"] == decay["split"] == 1.0
    assert decay["llrd"] == pytest.approx(0.8) and decay["llrd_0.9"] == pytest.approx(0.9)
    assert decay["discriminative"] == pytest.approx(1 / 2.6)


def test_local_parallel_does_not_oversubscribe() -> None:
    cfg = compose_preset("freezing", ["+experiment=local_parallel", "trainer=quick"], hydra=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs * cfg.trainer.threads <= max(2, os.cpu_count() or 1)
    assert cfg.trainer.threads == 1 and cfg.trainer.epochs == 2
    instantiate(cfg.hydra.launcher)


def test_default_launcher_stays_sequential() -> None:
    cfg = compose_preset("freezing", hydra=True)
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")
    assert cfg.trainer.resume is False


def test_slurm_preset_renders_sbatch_with_requeue_and_resume(tmp_path: Path, monkeypatch) -> None:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from submitit.slurm import slurm

    cfg = compose_preset("lr", ["+experiment=slurm", "hydra.launcher.partition=gpu_short",
                                f"hydra.sweep.dir={tmp_path}"], hydra=True)
    assert cfg.trainer.resume is True
    assert cfg.hydra.launcher.max_num_timeout >= 1
    launcher = instantiate(cfg.hydra.launcher)
    assert isinstance(launcher, SlurmLauncher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    captured: dict = {}

    def capture(executor, submissions):  # stands in for sbatch: record what would be submitted
        captured.update(executor.parameters, max_num_timeout=executor.max_num_timeout,
                        jobs=len(submissions))
        raise RuntimeError("captured")

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", staticmethod(lambda: 1))
    monkeypatch.setattr(slurm.SlurmExecutor, "_internal_process_submissions", capture)
    with pytest.raises(RuntimeError, match="captured"):
        launcher.launch([["optim=adamw", "seed=0"], ["optim=llrd", "seed=0"]], initial_job_idx=0)
    assert captured["jobs"] == 2 and captured["max_num_timeout"] == cfg.hydra.launcher.max_num_timeout
    params = {k: v for k, v in captured.items() if k not in ("jobs", "max_num_timeout")}
    script = slurm._make_sbatch_string(command="run", folder=tmp_path, **params)
    for line in ("--partition=gpu_short", "--gpus-per-node=1", "--time=120", "--signal=USR2@120",
                 "--open-mode=append"):
        assert line in script


# ----- real multiruns (slow) ----------------------------------------------------------------------
@pytest.mark.slow
def test_joblib_sweep_with_a_failing_job_then_report(tmp_path: Path, cache: Path) -> None:
    """2 scenarios x 2 seeds, joblib (2 jobs x 1 thread). Job n resumes from resume/<n>, which
    is empty except for job 3 (backbone, seed 1): its checkpoint is corrupt, so exactly that job
    fails at run time, after config validation, and the sweep exits 1 after its report."""
    sweep, resume = tmp_path / "sweep", tmp_path / "resume"
    corrupt = resume / "3" / CHECKPOINT_DIR / LAST
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a checkpoint")
    for job in range(3):
        (resume / str(job)).mkdir()
    done = mtexp_train(["+experiment=local_parallel", *TINY, "freezing=none,backbone", "seed=0,1",
                        f"trainer.resume='{resume}/${{hydra:job.num}}'",
                        f"hydra.sweep.dir={sweep}"], cache, returncode=1)
    assert "1 run(s) failed" in done.stderr and "3_seed1" in done.stderr

    runs = run_dirs(sweep)
    assert set(runs) == {"0_seed0", "1_seed1", "2_seed0", "3_seed1"}
    for name, run in runs.items():
        failed = name == "3_seed1"
        check_run_dir(run, RUN_FILES if failed else COMPLETED_FILES)
        assert read_yaml(run / "choices.yaml")["freezing"] == ("none" if name[0] in "01" else "backbone")
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == ("failed" if failed else "completed")
        if failed:
            assert status["error"] and status["traceback"] and not (run / "metrics.json").exists()
        else:
            assert json.loads((run / "env.json").read_text())["threads"] == 1
    assert (sweep / "report" / "summary.csv").is_file()  # the end-of-sweep callback ran

    df = load_runs(sweep)
    assert df["status"].value_counts().to_dict() == {"completed": 3, "failed": 1}
    out = tmp_path / "report"
    mtexp_report([str(sweep), "--out", str(out), "--by", "freezing"])
    summary = pd.read_csv(out / "summary.csv").set_index("freezing")
    assert list(summary.index) == ["none", "backbone"]
    assert summary.loc["none", ["runs", "n", "seeds", "failed"]].tolist() == [2, 2, 2, 0]
    assert summary.loc["backbone", ["runs", "n", "seeds", "failed"]].tolist() == [2, 1, 1, 1]
    assert summary["test.intent.accuracy:n"].tolist() == [2, 1]
    assert summary["test.intent.accuracy:mean"].notna().all()
    md = (out / "summary.md").read_text()
    failed_line = next(line for line in md.splitlines() if "3_seed1" in line)
    assert "failed" in failed_line


@pytest.mark.slow
def test_submitit_local_two_job_sweep(tmp_path: Path, cache: Path) -> None:
    sweep = tmp_path / "sweep"
    mtexp_train(["+experiment=local_submitit", *TINY, "freezing=none,backbone", "seed=0",
                 f"hydra.sweep.dir={sweep}"], cache)
    runs = run_dirs(sweep)
    assert set(runs) == {"0_seed0", "1_seed0"}
    for run in runs.values():
        check_run_dir(run, COMPLETED_FILES)
        assert json.loads((run / "status.json").read_text())["status"] == "completed"
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2
    assert load_runs(sweep)["freezing"].tolist() == ["none", "backbone"]


def submitit_task_pid(sweep: Path) -> int | None:
    """The process running the job (`python -m submitit.core._submit <sweep>/.submitit/...`)."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if "submitit.core._submit" in cmdline and str(sweep) in cmdline:
            return int(proc.name)
    return None


def wait_for(condition, timeout: float, process: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert process.poll() is None, "the sweep ended before the job could be interrupted"
        time.sleep(0.05)
    raise TimeoutError("condition not met")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job process through /proc")
def test_requeued_submitit_job_resumes_from_its_checkpoint(tmp_path: Path, cache: Path) -> None:
    """The Slurm preset's requeue path, on submitit's local executor: after epoch 1 the job gets
    the preemption signal, submitit requeues it, and with trainer.resume=true the new attempt
    continues from checkpoints/last.pt in the same run directory."""
    sweep = tmp_path / "sweep"
    args = ["+experiment=local_submitit", "trainer.resume=true", *TINY, "data.size=2000",
            "trainer.epochs=4", "eval.cka_sentences=0", f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen(train_command(*args), cwd=REPO, env=env(cache), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        last = sweep / "0_seed0" / CHECKPOINT_DIR / LAST
        wait_for(last.is_file, 300, process)
        interrupted = torch.load(last, map_location="cpu", weights_only=False)["state"]
        pid = wait_for(lambda: submitit_task_pid(sweep), 30, process)
        os.kill(pid, signal.SIGUSR2)
        output, _ = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, output[-3000:]
    run = sweep / "0_seed0"
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.*"))
    assert "Requeued job" in logs
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    # Epochs up to the checkpoint are the first attempt's rows, not a rerun (wall-clock differs).
    before = pd.DataFrame(interrupted["history"])
    pd.testing.assert_frame_equal(history.iloc[: len(before)][before.columns], before,
                                  check_dtype=False)


@pytest.mark.slow
def test_a_tune_preset_tunes_confirms_and_reports_end_to_end(tmp_path: Path, cache: Path) -> None:
    """`mtexp-tune -m` on the freezing preset, two scenarios: `none` tuned (2 trials) and
    confirmed with three seeds, each in its own process; `all` not tuned; the report covers the
    confirm runs only. Started again on the same folder, it finds everything done."""
    sweep = tmp_path / "sweep"
    args = ["-cd", "sweeps", "-cn", "tune_freezing", *TINY, "data.unseen_label=fallback",
            "freezing=none,all", "tune.trials=2", "trainer.budget.max_epochs=2",
            "trainer.budget.min_steps=0", f"hydra.sweep.dir={sweep}"]
    command = [sys.executable, "-m", "mtexp.tune", "-m", *args]
    done = subprocess.run(command, cwd=REPO, env=env(cache), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (sweep / "tuning.db").is_file()
    tuned = json.loads((sweep / "0_none" / "tuning.json").read_text())
    assert tuned["trials"] == 2 and set(tuned["best"]) == {"optim.lr"}
    assert tuned["configuration"]["freezing"] == "none" and tuned["study"].startswith("tune_freezing: ")
    assert json.loads((sweep / "1_all" / "tuning.json").read_text())["trials"] == 0
    runs = load_runs(*sorted(sweep.glob("*/seed*")))
    assert sorted(runs["freezing"]) == ["all"] * 3 + ["none"] * 3
    assert set(runs["status"]) == {"completed"} and set(runs["seed"]) == {0, 1, 2}
    assert len(list((sweep / "0_none" / "trials").iterdir())) == 2
    summary = pd.read_csv(sweep / "report" / "summary.csv").set_index("freezing")
    assert summary.loc["none", "n"] == 3 and summary.loc["all", "n"] == 3  # no trial among them
    again = subprocess.run(command, cwd=REPO, env=env(cache), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((sweep / "0_none" / "trials").iterdir())) == 2  # no trial run twice
