"""Every committed report under results/ is what mtexp-report writes today from that folder's runs/,
with the options its README.md records (`mtexp-report runs --out . --by ...`)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mtexp.report import claims_markdown, parse_args, prepare_report, split_option

REPO = Path(__file__).resolve().parents[1]
FOLDERS = sorted(runs.parent for runs in (REPO / "results").glob("*/runs") if runs.is_dir())
RECORDED = re.compile(r"`mtexp-report ([^`]*)`")
# The only lines that may differ: when the report was generated, and the path the runs were read from.
VOLATILE = ("Generated ", "Runs: ")


def recorded_command(folder: Path) -> list[str]:
    """The mtexp-report arguments README.md records for regenerating the folder's report."""
    found = RECORDED.findall((folder / "README.md").read_text(encoding="utf-8"))
    assert len(found) == 1, f"{folder.name}/README.md must record one `mtexp-report ...` command"
    return shlex.split(found[0])


def stable(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith(VOLATILE)]


def test_every_committed_sweep_is_checked() -> None:
    assert len(FOLDERS) >= 5, FOLDERS


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_committed_report_matches_its_runs(folder: Path) -> None:
    args = parse_args(recorded_command(folder))
    assert Path(args.out) == Path("."), "the report is written into the folder itself"
    report = prepare_report([folder / d for d in args.sweep_dirs], by=split_option(args.by),
                            metrics=split_option(args.metrics))
    assert stable(report.summary_markdown()) == stable((folder / "summary.md").read_text(encoding="utf-8"))
    assert claims_markdown(report.results) == (folder / "claims.md").read_text(encoding="utf-8")
