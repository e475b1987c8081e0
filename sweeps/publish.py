"""Copy a finished sweep into results/: the runs' small files, the report, and how it was made.

    python sweeps/publish.py multirun/freezing_snips/<time> results/freezing_snips \
        --command "mtexp-train -m -cd sweeps -cn freezing data=snips"

Weights and checkpoints stay behind; every other file of each run directory is copied as it is
(a failed run's status.json with its error and traceback freed of this machine's paths),
then `mtexp-report` runs on the copy and README.md records the command, machine and date.

A tuning sweep (`mtexp-tune`; the sweep folder may hold several, e.g. one per group of scenarios)
is published in two parts: the confirm runs, each configuration's `tuning.json` beside them, go
to `runs/` (what the report reads); the trials and each study's `tuning.db` go to `tuning/`, so
that the report counts only the confirm runs. README.md then gives each configuration's tuning
record: trials, pruned, seconds, the learning rates chosen on dev and their dev score.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from mtexp.io import atomic_write_text
from mtexp.report import main as report_main
from mtexp.rundir import ENV_FILE, STATUS_FILE, UNPUBLISHED, RunDir, run_dirs_under
from mtexp.tune import RECORD_FILE, STORAGE_FILE, TRIALS_DIR, read_record

LEFT_BEHIND = (*UNPUBLISHED, "report")  # and any report written inside a run folder
RUNS, TUNING = "runs", "tuning"


def is_trial(run: Path, sweep_dir: Path) -> bool:
    """A run directory inside a configuration's `trials/` folder of a tuning sweep."""
    return TRIALS_DIR in run.relative_to(sweep_dir).parts[:-1]


SITE_PACKAGES = re.compile(r"/[^\s\"']*/site-packages/")
CHECKOUT = re.compile(r"/[^\s\"']*/(?=mtexp/[\w/]+\.py)")


def portable(text: str, sweep_dir: Path) -> str:
    """`text` without this machine's paths: the sweep folder becomes `<sweep>`, installed
    packages `<site-packages>/`, and the checkout's `mtexp/...` files lose their folder."""
    text = text.replace(str(sweep_dir.resolve()), "<sweep>")
    return CHECKOUT.sub("", SITE_PACKAGES.sub("<site-packages>/", text))


def copy_tree(source: Path, target: Path, sweep_dir: Path) -> None:
    """Copy a run directory; the error and traceback of its status.json name no local path."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*LEFT_BEHIND), dirs_exist_ok=True)
    status = target / STATUS_FILE
    if status.is_file():
        atomic_write_text(status, portable(status.read_text(), sweep_dir))


def copy_runs(sweep_dir: Path, destination: Path) -> list[Path]:
    """Copy every run directory (trials to `tuning/`); the published runs, trials left out."""
    runs = []
    for run in run_dirs_under(sweep_dir):
        relative = run.relative_to(sweep_dir)
        if is_trial(run, sweep_dir):
            copy_tree(run, destination / TUNING / relative, sweep_dir)
            continue
        copy_tree(run, destination / RUNS / relative, sweep_dir)
        runs.append(run)
    return runs


def copy_tuning_records(sweep_dir: Path, destination: Path) -> list[Path]:
    """Each configuration's tuning.json beside its confirm runs and each tuning.db in `tuning/`."""
    records = sorted(sweep_dir.rglob(RECORD_FILE))
    for record in records:
        target = destination / RUNS / record.relative_to(sweep_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record, target)
    for storage in sorted(sweep_dir.rglob(STORAGE_FILE)):
        target = destination / TUNING / storage.relative_to(sweep_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(storage, target)
    return [record.parent for record in records]


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


def tuning_row(record: dict[str, Any]) -> str:
    configuration = " ".join(f"{k}={v}" for k, v in record.get("configuration", {}).items())
    best = ", ".join(f"{key}={value:.3g}" for key, value in record.get("best", {}).items())
    score = record.get("best_dev_score")
    return (f"| {configuration or 'defaults'} | {record.get('trials', 0)} | {record.get('pruned', 0)} | "
            f"{record.get('failed', 0)} | {record.get('seconds', 0):.0f} | {best or 'not tuned'} | "
            f"{'' if score is None else f'{score:.4f}'} |")


def tuning_section(folders: list[Path], sweep_dir: Path) -> str:
    """The tuning record of each configuration, as a Markdown table (empty when none)."""
    records = [(folder, read_record(folder)) for folder in folders]
    if not records:
        return ""
    rows = [tuning_row(record) for _, record in records if record is not None]
    total = sum(record.get("seconds", 0) for _, record in records if record is not None)
    return (
        "\n## Tuning\n\nEach configuration's learning rates were chosen on dev (test never looked at) "
        "with one seed, then run with the confirm seeds. Seconds: all trials of the configuration; "
        f"{total / 3600:.2f} h in all. Trials' records: `tuning/`.\n\n"
        "| configuration | trials | pruned | failed | seconds | learning rates chosen | dev score |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def readme(commands: list[str], run_dirs: list[Path], destination: Path, by: str | None = None,
           notes: str = "", tuning: str = "") -> str:
    date = dt.date.today().isoformat()
    by_option = f" --by {by}" if by else ""
    command_lines = "\n".join(f"    {command}" for command in commands)
    intro = f"{notes.strip()}\n\n" if notes.strip() else ""
    return (
        f"# {destination.name}\n\n{intro}"
        f"Command (from the repository root):\n\n{command_lines}\n\n"
        f"Machine: {machine_line(run_dirs)}\n\nDate: {date}. Runs: {len(run_dirs)} "
        f"(`{RUNS}/`, weights and checkpoints left out). Report: `summary.md`, `claims.md`, "
        f"`report.html`, PNG plots; from this folder, `mtexp-report {RUNS} --out .{by_option}` writes "
        "them again.\n" + tuning
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--command", required=True, action="append",
                        help="the exact command that made the sweep (repeat for a sweep run in parts)")
    parser.add_argument("--by", default=None, help="grouping passed to mtexp-report")
    parser.add_argument("--notes", default="", help="Markdown put first in README.md: protocol, budget")
    args = parser.parse_args(argv)
    run_dirs = copy_runs(args.sweep_dir, args.destination)
    if not run_dirs:
        parser.error(f"no run directories (status.json) under {args.sweep_dir}")
    tuned = copy_tuning_records(args.sweep_dir, args.destination)
    text = readme(args.command, run_dirs, args.destination, args.by, args.notes,
                  tuning_section(tuned, args.sweep_dir))
    atomic_write_text(args.destination / "README.md", text)
    report_args = [str(args.destination / RUNS), "--out", str(args.destination)]
    return report_main(report_args + (["--by", args.by] if args.by else []))


if __name__ == "__main__":
    sys.exit(main())
