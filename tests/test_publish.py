"""sweeps/publish.py: what a published tuning sweep holds, and where."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def publish():
    spec = importlib.util.spec_from_file_location("publish", ROOT / "sweeps" / "publish.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"status": "completed"}))
    (folder / "metrics.json").write_text("{}")
    (folder / "model.safetensors").write_text("weights")


RECORD = {"configuration": {"freezing": "none"}, "trials": 5, "pruned": 2, "failed": 0,
          "seconds": 720.4, "best": {"optim.lr": 0.000123456}, "best_dev_score": 0.91234}


@pytest.fixture
def tuning_sweep(tmp_path: Path) -> Path:
    """Two parts (`a`, `b`) as two tuning sweeps write them: trials, confirm runs, records, storage."""
    sweep = tmp_path / "sweep"
    for part, name in (("a", "0_none"), ("b", "0_backbone")):
        configuration = sweep / part / name
        for trial in range(2):
            write_run(configuration / "trials" / str(trial))
        for seed in range(3):
            write_run(configuration / f"seed{seed}")
        (configuration / "tuning.json").write_text(json.dumps(RECORD))
        (sweep / part / "tuning.db").write_text("sqlite")
        (sweep / part / "report").mkdir()
        (sweep / part / "report" / "summary.md").write_text("old")
    return sweep


def test_confirm_runs_go_to_runs_and_trials_to_tuning(publish, tuning_sweep: Path, tmp_path: Path):
    out = tmp_path / "published"
    runs = publish.copy_runs(tuning_sweep, out)
    assert len(runs) == 6 and all(run.name.startswith("seed") for run in runs)
    published = sorted(p.parent.name for p in (out / "runs").rglob("status.json"))
    assert published == sorted(["seed0", "seed1", "seed2"] * 2)
    assert len(list((out / "tuning").rglob("status.json"))) == 4
    assert not list(out.rglob("model.safetensors")), "weights are left behind"
    assert not (out / "runs" / "a" / "report").exists()


def test_tuning_records_sit_beside_their_confirm_runs(publish, tuning_sweep: Path, tmp_path: Path):
    out = tmp_path / "published"
    publish.copy_runs(tuning_sweep, out)
    folders = publish.copy_tuning_records(tuning_sweep, out)
    assert (out / "runs" / "a" / "0_none" / "tuning.json").is_file()
    assert (out / "tuning" / "b" / "tuning.db").read_text() == "sqlite"
    section = publish.tuning_section(folders, tuning_sweep)
    assert "| freezing=none | 5 | 2 | 0 | 720 | optim.lr=0.000123 | 0.9123 |" in section
    assert "0.40 h in all" in section


def test_readme_keeps_its_title_with_or_without_notes(publish, tmp_path: Path):
    plain = publish.readme(["mtexp-tune -m"], [], tmp_path / "freezing_x")
    noted = publish.readme(["cmd a", "cmd b"], [], tmp_path / "freezing_x", "freezing", "Protocol: x.")
    assert plain.startswith("# freezing_x\n\nCommand")
    assert noted.startswith("# freezing_x\n\nProtocol: x.\n\nCommand")
    assert "    cmd a\n    cmd b\n" in noted and "mtexp-report runs --out . --by freezing" in noted


def test_a_failed_runs_status_names_no_local_path(publish, tuning_sweep: Path, tmp_path: Path):
    trial = tuning_sweep / "a" / "0_none" / "trials" / "1"
    error = f"CheckpointError: could not write {trial.resolve()}/checkpoints/last.pt"
    traceback = (
        'File "/opt/env/lib/python3.11/site-packages/torch/serialization.py", line 1003, in save\n'
        'File "/home/someone/checkout/mtexp/rundir.py", line 143, in write_checkpoint\n'
    )
    status = {"status": "failed", "error": error, "traceback": traceback}
    (trial / "status.json").write_text(json.dumps(status))
    publish.main([str(tuning_sweep), str(tmp_path / "out"), "--command", "mtexp-tune -m"])
    published = tmp_path / "out" / "tuning" / "a" / "0_none" / "trials" / "1" / "status.json"
    status = json.loads(published.read_text())
    assert status["error"] == "CheckpointError: could not write <sweep>/a/0_none/trials/1/checkpoints/last.pt"
    assert status["traceback"] == (
        'File "<site-packages>/torch/serialization.py", line 1003, in save\n'
        'File "mtexp/rundir.py", line 143, in write_checkpoint\n'
    )
