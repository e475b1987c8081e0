"""Copy a finished sweep into results/: the runs' small files, the report, and how it was made.

    python sweeps/publish.py multirun/freezing_snips/<time> results/freezing_snips \
        --command "mtexp-train -m -cd sweeps -cn freezing data=snips"

Weights and checkpoints stay behind; every other file of each run directory is copied as it is,
then `mtexp-report` runs on the copy and README.md records the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from pathlib import Path

from mtexp.io import atomic_write_text
from mtexp.report import main as report_main
from mtexp.rundir import ENV_FILE, UNPUBLISHED, RunDir, run_dirs_under

LEFT_BEHIND = (*UNPUBLISHED, "report")  # and any report written inside a run folder


def copy_runs(sweep_dir: Path, destination: Path) -> list[Path]:
    runs = run_dirs_under(sweep_dir)
    for run in runs:
        target = destination / "runs" / run.relative_to(sweep_dir)
        shutil.copytree(run, target, ignore=shutil.ignore_patterns(*LEFT_BEHIND), dirs_exist_ok=True)
    return runs


def machine_line(run_dirs: list[Path]) -> str:
    for run in run_dirs:
        env = RunDir(run).read_environment()
        if env is not None:
            return (
                f"{env.get('processor')} x {env.get('cpu_count')} cores, device {env.get('device')}, "
                f"{env.get('threads')} torch threads; Python {env.get('python')}, "
                f"torch {env.get('torch')}, transformers {env.get('transformers')}; "
                f"git {str(env.get('git_revision'))[:10]}"
            )
    return f"unknown (no {ENV_FILE})"


def readme(command: str, run_dirs: list[Path], destination: Path, by: str | None = None) -> str:
    date = dt.date.today().isoformat()
    by_option = f" --by {by}" if by else ""
    return (
        f"# {destination.name}\n\n"
        f"Command (from the repository root):\n\n    {command}\n\n"
        f"Machine: {machine_line(run_dirs)}\n\nDate: {date}. Runs: {len(run_dirs)} "
        f"(`runs/`, weights and checkpoints left out). Report: `summary.md`, `claims.md`, "
        f"`report.html`, PNG plots; from this folder, `mtexp-report runs --out .{by_option}` writes "
        "them again.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--command", required=True, help="the exact command that made the sweep")
    parser.add_argument("--by", default=None, help="grouping passed to mtexp-report")
    args = parser.parse_args(argv)
    run_dirs = copy_runs(args.sweep_dir, args.destination)
    if not run_dirs:
        parser.error(f"no run directories (status.json) under {args.sweep_dir}")
    text = readme(args.command, run_dirs, args.destination, args.by)
    atomic_write_text(args.destination / "README.md", text)
    report_args = [str(args.destination / "runs"), "--out", str(args.destination)]
    return report_main(report_args + (["--by", args.by] if args.by else []))


if __name__ == "__main__":
    sys.exit(main())
