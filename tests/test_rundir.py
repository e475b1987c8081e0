"""The run directory module: file names in one place, writers and lenient readers, flatten."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mtexp import rundir
from mtexp.data.types import TaskSpec
from mtexp.rundir import RunDir, flatten

REPO = Path(__file__).resolve().parents[1]
FILE_NAMES = [value for name, value in vars(rundir).items()
              if name.endswith(("_FILE", "_DIR")) or name in ("LAST", "BEST")]
# The bundled backbone's own weights file happens to share the run directory's model file name.
ELSEWHERE = {("mtexp/backbones.py", rundir.MODEL_FILE)}


def test_file_names_are_spelled_only_in_the_run_directory_module():
    assert {"config.yaml", "status.json", "metrics.json", "history.csv", "steps.csv", "last.pt",
            "best.pt", "checkpoints", ".hydra"} <= set(FILE_NAMES)
    # A folder name without a dot ("checkpoints", "tokenizer") is also an everyday word: it counts
    # where a path is joined with it.
    literal = re.compile("|".join(
        rf"[\"']{re.escape(name)}[\"']" if "." in name else rf"/\s*[\"']{re.escape(name)}[\"']"
        for name in FILE_NAMES))
    found = set()
    for path in [*REPO.glob("mtexp/**/*.py"), *REPO.glob("sweeps/**/*.py")]:
        relative = path.relative_to(REPO).as_posix()
        for match in literal.finditer(path.read_text(encoding="utf-8")):
            found.add((relative, match.group().lstrip("/ ")[1:-1]))
    assert {hit for hit in found if hit[0] != "mtexp/rundir.py"} == ELSEWHERE


def test_writers_and_readers_round_trip(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_status("running", "2025-01-01T00:00:00+00:00")
    run.write_config(OmegaConf.create({"seed": 3, "copy": "${seed}"}), {"freezing": "none"}, ["seed=3"])
    run.write_labels([TaskSpec("intent", "sequence", ("a", "b"))])
    run.write_history([{"epoch": 1, "dev.score": 0.5}], steps=[])
    run.write_metrics({"status": "completed", "seed": 3})
    problems: list[str] = []
    assert run.read_status(problems)["ended"] is None
    assert run.read_config(problems) == {"seed": 3, "copy": 3}
    assert run.read_choices(problems) == {"freezing": "none"}
    assert run.read_overrides(problems) == ["seed=3"]
    assert run.read_metrics(problems) == {"status": "completed", "seed": 3}
    assert run.read_history()["dev.score"].tolist() == [0.5]
    assert problems == []
    assert not (run.path / rundir.STEPS_FILE).exists()  # no steps logged, no steps.csv
    assert (run.path / rundir.LABELS_FILE).read_text().count('"a"') == 1


def test_failed_status_carries_the_error_and_its_traceback(tmp_path):
    run = RunDir(tmp_path)
    try:
        raise ValueError("bad value")
    except ValueError as error:
        run.write_status("failed", "then", error)
    status = run.read_status([])
    assert status["error"] == "ValueError: bad value" and "Traceback" in status["traceback"]
    assert status["ended"] is not None


def test_readers_note_corrupt_files_and_fall_back_to_hydra(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / rundir.METRICS_FILE).write_text('{"status": "comp')
    (tmp_path / rundir.CONFIG_FILE).write_text("- a list, not a mapping\n")
    (tmp_path / rundir.HYDRA_DIR).mkdir()
    (tmp_path / rundir.HYDRA_DIR / rundir.CONFIG_FILE).write_text("seed: 7\n")
    problems: list[str] = []
    assert run.read_metrics(problems) is None
    assert run.read_config(problems) == {"seed": 7}
    assert run.read_overrides(problems) == [] and run.read_choices(problems) == {}
    assert run.read_history() is None and run.read_environment() is None
    assert problems[0].startswith("metrics.json: unreadable (JSONDecodeError")
    assert problems[1] == "config.yaml: expected a dict, got list"


def test_checkpoints_round_trip_and_are_none_when_absent(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_checkpoint() is None
    path = run.write_checkpoint(rundir.BEST, {"model": {"w": torch.ones(2)}})
    assert path == tmp_path / rundir.CHECKPOINT_DIR / rundir.BEST
    assert torch.equal(run.read_checkpoint(rundir.BEST)["model"]["w"], torch.ones(2))


def test_run_dirs_under_finds_status_files(tmp_path):
    for name in ("b", "a/x"):
        RunDir(tmp_path / name).create()
        RunDir(tmp_path / name).write_status("running", "now")
    (tmp_path / "c").mkdir()
    assert rundir.run_dirs_under(tmp_path) == [tmp_path / "a/x", tmp_path / "b"]


TREE = {"intent": {"accuracy": 0.5, "labels": ["a", "b"]},
        "slots": {"f1": None, "per_entity": {"city": 0.2}, "note": "text"}}


def test_flatten_keeps_every_leaf_with_lists_as_json():
    assert flatten(TREE, "test.") == {
        "test.intent.accuracy": 0.5, "test.intent.labels": '["a", "b"]', "test.slots.f1": None,
        "test.slots.per_entity.city": 0.2, "test.slots.note": "text",
    }


@pytest.mark.parametrize("skip", [(), ("per_entity",)])
def test_flatten_scalars_only_for_history_rows(skip):
    flat = flatten(TREE, "dev.", skip=skip, scalars_only=True)
    expected = {"dev.intent.accuracy": 0.5, "dev.slots.f1": None}
    if not skip:
        expected["dev.slots.per_entity.city"] = 0.2
    assert flat == expected
