"""Atomic writes: whole files only, with the permissions a plain open() would give them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch import nn

from mtexp.io import (
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    make_temp_dir,
)
from mtexp.rundir import RunDir
from mtexp.weights import save_weights


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         indirect=["umask"])
def test_written_files_get_0666_less_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    assert current_umask() == umask
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_config(OmegaConf.create({"seed": 0}), {"freezing": "none"}, [])
    run.write_metrics({"status": "completed"})
    run.write_checkpoint("last", {"epoch": 0})
    save_weights(run.path / "model.safetensors", nn.Linear(2, 2))
    atomic_write_bytes(tmp_path / "report.html", b"<html></html>")  # how mtexp-report writes
    written = [run.path / name for name in ("config.yaml", "metrics.json", "model.safetensors")]
    written += [run.checkpoint_file("last"), tmp_path / "report.html"]
    for path in written:
        assert mode(path) == expected, path.name
    assert not list(tmp_path.rglob(".*"))  # no temporary file left
    assert mode(make_temp_dir(tmp_path, ".x.")) == 0o777 & ~umask


@pytest.mark.parametrize("umask", [0o022], indirect=True)
def test_a_replaced_file_keeps_its_permissions(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("{}")
    target.chmod(0o640)
    atomic_write_json(target, {"score": 2.0})
    assert mode(target) == 0o640 and target.read_text().startswith("{\n")


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def failing(temp: str) -> None:
        Path(temp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(target, failing)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
