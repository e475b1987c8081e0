"""Faults in the life of a run: resuming under another config, endings that must be recorded
(config errors, SIGTERM mid-epoch, a full disk, failed sweep jobs), two runs into one directory,
a rerun into a finished one (which must leave it as it was, byte for byte, on every rank under
torchrun), and bad settings caught before any data loads."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, TrainCLI

import mtexp.train as train_module
from mtexp.callbacks import extra_callbacks
from mtexp.checkpoint import ResumeError
from mtexp.config import ConfigError
from mtexp.data import DataError
from mtexp.data.jointbert import JointBertSource
from mtexp.interrupts import RunInterrupted
from mtexp.rundir import LOCK_FILE, RunDir
from mtexp.runlife import RunDirTaken
from mtexp.runlock import RunDirBusy, RunLock
from mtexp.train import run
from tests.run_faults_support import (
    SignalAt,
    assert_same_outputs,
    every_file,
    signals_as_in_mtexp_train,
    small_jointbert,
)
from tests.test_train import TINY, tiny_config

RECORD = ("status.json", "config.yaml", "metrics.json", "history.csv")
CLI_RUN = [*TINY, "trainer.epochs=3", "data.size=800"]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in RECORD if (run_dir / name).exists()}


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A completed run (2 epochs of trainer=quick on the tiny backbone)."""
    run_dir = tmp_path_factory.mktemp("finished")
    run(tiny_config(), run_dir)
    return run_dir


def no_data_loading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the data was loaded before the config was rejected")

    monkeypatch.setattr(train_module, "load_data_checked", refuse)


# ----- resume that cannot lie ------------------------------------------------------------------
def test_resuming_under_another_config_names_the_keys_and_changes_nothing(finished_run, monkeypatch):
    before = snapshot(finished_run)
    assert set(before) == set(RECORD)
    no_data_loading(monkeypatch)
    changed = ("trainer.epochs=4", "data.max_train_examples=200", "trainer.resume=true")
    with pytest.raises(ResumeError) as raised:
        run(tiny_config(*changed), finished_run)
    message = str(raised.value)
    assert "trainer.epochs (checkpoint: 2, now: 4)" in message
    assert "data.max_train_examples (checkpoint: None, now: 200)" in message
    assert "optim" not in message and "seed" not in message
    assert snapshot(finished_run) == before


def test_resuming_under_the_same_config_reports_the_same_run(finished_run):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    resumed = run(tiny_config("trainer.resume=true", "trainer.threads=1"), finished_run)
    assert resumed["steps"] == metrics["steps"] and resumed["test"] == metrics["test"]
    assert status(finished_run)["status"] == "completed"


def test_resuming_from_a_folder_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    no_data_loading(monkeypatch)
    with pytest.raises(ConfigError, match=r"trainer\.resume names a run directory that does not exist"):
        run(tiny_config(f"trainer.resume={tmp_path / 'no' / 'such' / 'run'}"), tmp_path / "run")
    assert status(tmp_path / "run")["status"] == "failed"


# ----- every ending recorded -----------------------------------------------------------------------
def test_a_config_error_leaves_a_failed_status_with_the_error(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer\.batch_size"):
        run(tiny_config("trainer.batch_size=0"), tmp_path)
    recorded = status(tmp_path)
    assert recorded["status"] == "failed" and "trainer.batch_size must be >= 1" in recorded["error"]
    assert (tmp_path / "config.yaml").is_file()


def test_a_failure_to_record_the_ending_keeps_the_original_error(tmp_path, monkeypatch, caplog):
    write_status = RunDir.write_status

    def disk_full_at_the_end(self, state, started, error=None):
        if state != "running":
            raise OSError(errno.ENOSPC, "No space left on device")
        write_status(self, state, started, error)

    monkeypatch.setattr(RunDir, "write_status", disk_full_at_the_end)
    config = tiny_config("data=snips", f"data.path={tmp_path / 'missing'}", base=("backbone=tiny",))
    with caplog.at_level(logging.ERROR, logger="mtexp.run"), pytest.raises(DataError):
        run(config, tmp_path / "run")
    messages = [record.getMessage() for record in caplog.records]
    assert "DataError" in messages[0] and "No space left" not in messages[0]  # the error comes first
    assert any("No space left on device" in m and "DataError" in m for m in messages[1:])
    assert status(tmp_path / "run")["status"] == "running"  # what could be written, no more


def limit_file_size() -> None:
    """In the child: files may not grow past 1 MB, and writing past it fails (no SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_a_full_disk_fails_the_run_with_its_error_recorded(tmp_path, train_cli):
    done = train_cli(CLI_RUN).run(tmp_path, check=False, preexec_fn=limit_file_size)
    assert done.returncode == 1, done.stderr[-3000:]
    recorded = status(tmp_path)
    assert recorded["status"] == "failed"
    assert recorded["error"].startswith("CheckpointError: could not write checkpoint")
    assert done.stderr.strip().splitlines()[-1] == f"Error: {recorded['error'].split(': ', 1)[1]}"
    assert not (tmp_path / "metrics.json").exists()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] in ([], ["best.pt"])  # no temporary


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_epoch_records_interrupted_and_the_requeued_run_continues(tmp_path, train_cli, signum):
    cli = train_cli([*CLI_RUN, "logger=csv", "logger.every_steps=1"])
    cli.run(tmp_path / "reference")
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    process = cli.start(run_dir, stderr=subprocess.PIPE, text=True)
    assert cli.signal_when(process, last.exists, signum) == 128 + signum
    assert "trainer.resume=true" in process.stderr.read()
    recorded = status(run_dir)
    assert recorded["status"] == "interrupted" and signal.Signals(signum).name in recorded["error"]
    interrupted = torch.load(last, weights_only=False)["state"]
    assert interrupted["batches_done"] > 0  # stopped within the epoch after the first, at a step
    cli.run(run_dir, "trainer.resume=true")
    assert status(run_dir)["status"] == "completed"
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    done = interrupted["history"]  # the epochs before the signal are not trained again
    assert done and history["seconds"].tolist()[: len(done)] == [row["seconds"] for row in done]
    assert_same_outputs(run_dir, tmp_path / "reference")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """`reference_run(*overrides)`: the folder of an uninterrupted run with those overrides."""
    made: dict[tuple[str, ...], Path] = {}

    def reference(*overrides: str) -> Path:
        if overrides not in made:
            made[overrides] = tmp_path_factory.mktemp("reference")
            run(tiny_config(*overrides), made[overrides])
        return made[overrides]

    return reference


STEP_LOG = ("logger=csv", "logger.every_steps=1")
MID_EPOCH = {  # overrides, and the step after which the signal comes
    "plain": (STEP_LOG, 7),
    "accumulated, thawing": ((*STEP_LOG, "freezing=gradual", "optim=llrd", "trainer.epochs=3",
                              "trainer.grad_accumulation=2"), 10),
}


@pytest.mark.parametrize("case", list(MID_EPOCH))
def test_a_signal_mid_epoch_checkpoints_that_step_and_the_resumed_run_ends_as_an_uninterrupted_one(
        case, tmp_path, reference_run):
    overrides, step = MID_EPOCH[case]
    with signals_as_in_mtexp_train(), extra_callbacks(SignalAt(step)), pytest.raises(RunInterrupted):
        run(tiny_config(*overrides), tmp_path)
    assert status(tmp_path)["status"] == "interrupted"
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)["state"]
    assert state["step"] == step and state["batches_done"] > 0
    counter = SignalAt(None)
    with extra_callbacks(counter):
        run(tiny_config(*overrides, "trainer.resume=true"), tmp_path)
    reference = reference_run(*overrides)
    steps = json.loads((reference / "metrics.json").read_text())["steps"]
    assert (counter.seen, counter.steps) == (steps - step, steps)  # the callback's state came back
    assert_same_outputs(tmp_path, reference)


def test_a_signal_while_a_checkpoint_is_written_lets_it_finish_then_stops(tmp_path, monkeypatch,
                                                                          reference_run):
    save = torch.save

    def save_with_a_signal(payload, path, *args, **kwargs):
        if isinstance(payload, dict) and "fingerprint" in payload and payload["state"]["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # while epoch 1's last.pt is being written
        save(payload, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_with_a_signal)
    with signals_as_in_mtexp_train(), pytest.raises(RunInterrupted):
        run(tiny_config(*STEP_LOG), tmp_path)
    monkeypatch.undo()
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)["state"]
    assert (state["epoch"], state["batches_done"]) == (1, 0)
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    run(tiny_config(*STEP_LOG, "trainer.resume=true"), tmp_path)
    assert_same_outputs(tmp_path, reference_run(*STEP_LOG))


@pytest.mark.slow
def test_a_sweep_with_a_failed_job_records_it_and_exits_non_zero_after_its_report(tmp_path, train_cli):
    sweep = tmp_path / "sweep"
    done = train_cli(["-m", *TINY]).run(tmp_path, "trainer.batch_size=8,0", f"hydra.sweep.dir={sweep}",
                                        check=False)
    assert done.returncode == 1, done.stderr[-3000:]
    jobs = {folder.name: status(folder) for folder in sweep.iterdir() if (folder / "status.json").exists()}
    assert sorted(jobs) == ["0_seed0", "1_seed0"]
    assert jobs["0_seed0"]["status"] == "completed"
    assert jobs["1_seed0"]["status"] == "failed" and "trainer.batch_size" in jobs["1_seed0"]["error"]
    assert (sweep / "report" / "summary.csv").is_file()
    assert "1 run(s) failed" in done.stderr


# ----- run directories that cannot mix --------------------------------------------------------------
def test_a_second_run_into_a_live_runs_directory_fails_at_once_naming_the_holder(tmp_path, monkeypatch):
    no_data_loading(monkeypatch)
    with RunLock(tmp_path), pytest.raises(RunDirBusy) as raised:
        run(tiny_config(), tmp_path)
    assert str(tmp_path) in str(raised.value) and f"pid {os.getpid()}" in str(raised.value)
    assert not (tmp_path / "status.json").exists() and not (tmp_path / LOCK_FILE).exists()


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 1, "host": os.uname().nodename}))
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.mark.slow
def test_two_runs_into_one_directory_the_second_fails_and_the_first_completes(tmp_path, train_cli):
    cli = train_cli(CLI_RUN)
    first = cli.start(tmp_path)
    try:
        cli.wait_for(first, (tmp_path / "status.json").exists)
        first.send_signal(signal.SIGSTOP)  # it holds the directory for as long as the second needs
        second = cli.run(tmp_path, check=False)
    finally:
        first.send_signal(signal.SIGCONT)
        first_status = first.wait(timeout=600)
    assert first_status == 0 and second.returncode == 1
    assert f"in use by another run (pid {first.pid}" in second.stderr and str(tmp_path) in second.stderr
    assert status(tmp_path)["status"] == "completed"


def test_a_rerun_into_a_finished_directory_needs_resume_or_overwrite(finished_run, monkeypatch):
    before = snapshot(finished_run)
    with pytest.raises(RunDirTaken, match=r"trainer\.resume=true .* trainer\.overwrite=true"):
        run(tiny_config(), finished_run)
    assert snapshot(finished_run) == before


@pytest.fixture(scope="module")
def finished_cli_run(tmp_path_factory) -> Path:
    """A completed run of mtexp-train (trainer=quick on the tiny backbone), with .hydra/ and train.log."""
    run_dir = tmp_path_factory.mktemp("finished_cli")
    TrainCLI(TINY).run(run_dir)
    return run_dir


@pytest.mark.parametrize("refusal", ["busy", "finished", "resumed under another config"])
def test_a_refused_run_leaves_the_directory_as_it_was_byte_for_byte(refusal, finished_cli_run):
    overrides = ("trainer.resume=true", "trainer.epochs=3") if refusal.startswith("resumed") else ()
    with RunLock(finished_cli_run) if refusal == "busy" else nullcontext():
        before = every_file(finished_cli_run)
        done = TrainCLI(TINY).run(finished_cli_run, *overrides, check=False)
        after = every_file(finished_cli_run)
    assert {"status.json", "train.log", ".hydra/hydra.yaml"} <= set(before)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert after == before


def test_an_overwrite_leaves_no_line_of_the_old_log(finished_cli_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_cli_run, run_dir)
    old_log = set((run_dir / "train.log").read_text().splitlines())
    cli = TrainCLI(["backbone=tiny", "data=snips", f"data.path={tmp_path / 'missing'}"])
    done = cli.run(run_dir, "trainer.overwrite=true", check=False)
    assert done.returncode == 1 and status(run_dir)["status"] == "failed"
    new_log = (run_dir / "train.log").read_text()
    assert "DataError" in new_log and old_log and not old_log & set(new_log.splitlines())
    assert "trainer.overwrite=true" in (run_dir / ".hydra" / "overrides.yaml").read_text()


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "mtexp.train"]


@pytest.mark.slow
@pytest.mark.parametrize("refusal", ["busy", "finished"])
def test_under_torchrun_every_rank_refuses_and_the_directory_stays_as_it_was(refusal, finished_cli_run,
                                                                             tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_cli_run, run_dir)
    with RunLock(run_dir) if refusal == "busy" else nullcontext():
        before = every_file(run_dir)
        done = subprocess.run([*TORCHRUN, *TINY, f"hydra.run.dir={run_dir}"], cwd=REPO_ROOT,
                              env=TrainCLI().env, capture_output=True, text=True, timeout=300)
        after = every_file(run_dir)
    refusals = [line for line in done.stderr.splitlines() if "Error: " in line and str(run_dir) in line]
    assert done.returncode != 0 and len(refusals) == 2, done.stderr[-3000:]  # one from each rank
    assert after == before


class StderrRecorder:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_an_error_line_reaches_stderr_in_one_write(monkeypatch):
    """Ranks under torchrun share stderr: a line written in two parts can run into another rank's."""
    recorder = StderrRecorder()
    monkeypatch.setattr(sys, "stderr", recorder)
    train_module.print_error("Error: run directory x is in use")
    assert recorder.writes == ["Error: run directory x is in use\n"]


def test_an_overwrite_removes_the_old_runs_files_first(finished_run, tmp_path):
    config = tiny_config("data=snips", f"data.path={tmp_path / 'missing'}", "trainer.overwrite=true",
                         base=("backbone=tiny",))
    with pytest.raises(DataError):
        run(config, finished_run)
    assert status(finished_run)["status"] == "failed"
    for name in ("metrics.json", "history.csv", "model.safetensors", "labels.json", "checkpoints"):
        assert not (finished_run / name).exists(), name


# ----- validated before any work ------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    (("trainer.early_stopping.metric=dev.intent.acuracy",), "trainer.early_stopping.metric must be"),
    (("freezing=partial", "freezing.k=5"), "freezing.k must be at most the backbone's 2 layers, got 5"),
    (("backbone=hub", "backbone.name_or_path=/no/such/folder"), "backbone.name_or_path: no model folder"),
])
def test_bad_settings_fail_before_the_data_loads_naming_the_key(overrides, message, tmp_path, monkeypatch):
    no_data_loading(monkeypatch)
    with pytest.raises(ConfigError, match=message):
        run(tiny_config(*overrides), tmp_path)
    assert message.split(" ")[0] in status(tmp_path)["error"]


def test_an_early_stopping_metric_of_no_task_fails_before_the_data_loads(tmp_path, monkeypatch):
    no_data_loading(monkeypatch)
    with pytest.raises(ConfigError, match="names 'itent', which is not a task"):
        run(tiny_config("trainer.early_stopping.metric=dev.itent.accuracy"), tmp_path)
    assert status(tmp_path)["status"] == "failed"


def test_a_metric_of_no_task_fails_right_after_the_data_loads_where_only_the_data_names_tasks(
        tmp_path, monkeypatch):
    monkeypatch.setattr(JointBertSource, "task_names", lambda self: None)
    data = small_jointbert(tmp_path / "data")
    with pytest.raises(ConfigError, match="names 'itent', which is not a task"):
        run(tiny_config("trainer.early_stopping.metric=dev.itent.accuracy", base=data), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_resume_whose_data_has_other_labels_leaves_the_directory_as_it_was(tmp_path):
    data = small_jointbert(tmp_path / "data")
    run(tiny_config(base=data), tmp_path / "run")
    for split in ("train", "dev", "test"):
        labels = tmp_path / "data" / split / "label"
        labels.write_text(labels.read_text().replace("B", "C"))
    before = every_file(tmp_path / "run")
    with pytest.raises(ResumeError, match="tasks or labels differ"):
        run(tiny_config("trainer.resume=true", base=data), tmp_path / "run")
    assert every_file(tmp_path / "run") == before


def test_a_data_error_prints_its_message_without_a_traceback(tmp_path, train_cli):
    cli = train_cli(["backbone=tiny", "data=snips", f"data.path={tmp_path / 'missing'}"])
    done = cli.run(tmp_path / "run", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("Error: ") and "Traceback" not in done.stderr
    assert str(tmp_path / "missing") in done.stderr
    cli.env["HYDRA_FULL_ERROR"] = "1"
    full = cli.run(tmp_path / "full", check=False)
    assert full.returncode == 1 and "Traceback" in full.stderr
