"""results/analysis.ipynb runs top to bottom against a tiny sweep made here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_module

nbformat = require_module("nbformat")
nbclient = require_module("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "results" / "analysis.ipynb"
TINY = ("backbone=tiny", "data.size=400", "trainer=quick", "eval.cka_sentences=16", "eval.train_subset=0")


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "MTEXP_SWEEP_DIRS" in code[0].source and "SWEEP_DIRS" in code[0].source


def output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts += [data.get(kind, "") for kind in ("text/plain", "text/html", "text/markdown")]
    return "\n".join(parts)


@pytest.mark.slow
def test_notebook_runs_on_a_tiny_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "MTEXP_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "mtexp.train", "-m", "+experiment=local_parallel", *TINY,
               "freezing=none,backbone", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    monkeypatch.setenv("MTEXP_SWEEP_DIRS", str(sweep))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend makes the PNGs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    by_tag = {tag: cell for cell in nb.cells for tag in cell.metadata.get("tags", [])}
    assert str(sweep) in output_text(by_tag["parameters"])
    table = output_text(by_tag["summary-table"])
    assert "none" in table and "backbone" in table and "Quality (test)" in table
    images = [out for cell in nb.cells for out in cell.get("outputs", [])
              if "image/png" in out.get("data", {})]
    assert len(images) >= 2
