"""Read run directories into one table and summarise it per group (mean, std, 95% CI over seeds, n).

Every view of a sweep (tables, plots, claims, the notebook) starts from `load_runs`.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mtexp.rundir import (
    CHECKPOINT_DIR,
    HYDRA_DIR,
    LABELS_FILE,
    METRICS_FILE,
    RUN_MARKERS,
    STEPS_FILE,
    RunDir,
    flatten,
    read_document,
)
from mtexp.scenarios import GROUP, scenario_names
from mtexp.tasks import HEADLINE_METRIC, SCORE

NOT_MEASURED = ("experiment", "paths")
KNOWN_GROUPS = ("backbone", "data", "freezing", "optim", "schedule", "trainer", "logger")
INFO_COLUMNS = (
    "seed", "status", "error", "started", "ended", "run_dir", "overrides", "problems", "has_metrics",
)
# Preferred row order for known optimizer presets (reference first); freezing scenarios follow
# the registry (`value_order`); other values follow alphabetically.
VALUE_ORDER = {
    "optim": ("adamw", "uniform", "split", "llrd", "discriminative", "per_task_heads"),
}
# Test columns of the quality table: each task's headline metric, macro-F1, the joint sentence
# accuracy, and the mean of the headline metrics (`test.score`).
QUALITY_METRICS = (*HEADLINE_METRIC.values(), "macro_f1", "sentence_accuracy")
HEADLINE = re.compile(rf"test\.([^.]+\.({'|'.join(QUALITY_METRICS)})|{SCORE})")
FRACTION = "cfg.data.train_fraction"
# Where a run records whether training converged (true / false); absent in older runs.
CONVERGED = ("converged", "convergence.converged")
STAT_SEP = ":"
_PRUNE = {HYDRA_DIR, CHECKPOINT_DIR, "__pycache__", ".git"}


class RunLoadWarning(UserWarning):
    """A run directory had a missing, unreadable or corrupt file; the run is kept."""


def find_run_dirs(*paths: str | os.PathLike[str]) -> list[Path]:
    """Folders holding status.json, metrics.json or .hydra/ under `paths` (runs are not nested)."""
    found: list[Path] = []
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"no such directory: {root}")
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            if any((here / m).exists() for m in RUN_MARKERS):
                found.append(here)
                dirnames[:] = []
            else:
                dirnames[:] = sorted(d for d in dirnames if d not in _PRUNE)
    return sorted(dict.fromkeys(p.resolve() for p in found))


def _choices(run: RunDir, problems: list[str]) -> dict[str, Any]:
    choices = run.read_choices(problems)
    # `experiment` (launchers, threads) and `paths` (where files live) are not what is measured:
    # not group columns.
    return {k: v for k, v in choices.items() if not str(k).startswith("hydra/") and k not in NOT_MEASURED}


def _seed(metrics: dict, config: dict, run: Path) -> int | None:
    for source in (metrics, config):
        if isinstance(source.get("seed"), (int, float)):
            return int(source["seed"])
    match = re.search(r"seed[_=-]?(\d+)", run.name)
    return int(match.group(1)) if match else None


def read_run(run: str | os.PathLike[str]) -> dict[str, Any]:
    """One row for one run directory; never raises on bad content (see the `problems` entry)."""
    return _read_run(Path(run))[0]


def _read_run(run: Path) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    files = RunDir(run)
    status_doc = files.read_status(problems)
    metrics = files.read_metrics(problems)
    config = files.read_config(problems)
    overrides = files.read_overrides(problems)
    status = status_doc.get("status") or (metrics or {}).get("status") or "unknown"
    if status == "completed" and metrics is None and not any("metrics" in p for p in problems):
        problems.append(f"{METRICS_FILE}: missing although the run completed")
    choices = _choices(files, problems)
    row: dict[str, Any] = {k: None if v is None else str(v) for k, v in choices.items()}
    row.update(
        seed=_seed(metrics or {}, config, run),
        status=str(status),
        error=status_doc.get("error"),
        started=status_doc.get("started"),
        ended=status_doc.get("ended"),
        run_dir=str(run),
        overrides=" ".join(map(str, overrides)),
        problems="; ".join(problems),
        has_metrics=bool(metrics),
    )
    leaves = {k: v for k, v in (metrics or {}).items() if k not in ("status", "seed")}
    row.update(flatten(leaves))
    before, after = row.get("drift.sts_spearman_before"), row.get("drift.sts_spearman_after")
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        row["drift.sts_spearman_change"] = after - before
    row.update(label_counts(run))
    row.update(flatten({k: v for k, v in config.items() if k != "hydra"}, "cfg."))
    return row, list(choices)


def label_counts(run: Path) -> dict[str, int]:
    """`labels.<task>`: how many labels each task has (labels.json); {} when not recorded."""
    labels = read_document(run / LABELS_FILE, [], dict) or {}
    return {f"labels.{task}": len(names) for task, names in labels.items() if isinstance(names, list)}


def _order(columns: Iterable[str], names: Sequence[str]) -> list[str]:
    groups = [c for c in KNOWN_GROUPS if c in names] + [c for c in names if c not in KNOWN_GROUPS]
    cfg = sorted(c for c in columns if c.startswith("cfg."))
    rest = [c for c in columns if c not in groups and c not in INFO_COLUMNS and c not in cfg]
    return groups + list(INFO_COLUMNS) + rest + cfg


def load_runs(*paths: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per run directory found under `paths`, whatever its status.

    Columns: group choices, `seed`, `status`, `error`, `run_dir`, `overrides`, `problems`
    (empty when all files read), `has_metrics`, every metrics.json leaf (`test.intent.accuracy`),
    and the resolved config as `cfg.<key>`. Corrupt files raise a `RunLoadWarning`, never an error.
    """
    if not paths:
        raise ValueError("load_runs needs at least one directory")
    read = [_read_run(run) for run in find_run_dirs(*paths)]
    rows = [row for row, _ in read]
    groups = list(dict.fromkeys(g for _, names in read for g in names))
    for row in rows:
        if row["problems"]:
            warnings.warn(f"{row['run_dir']}: {row['problems']}", RunLoadWarning, stacklevel=2)
    columns = list(dict.fromkeys(k for row in rows for k in row)) or list(INFO_COLUMNS)
    df = pd.DataFrame(rows, columns=_order(columns, groups))
    df.attrs["group_columns"] = [c for c in df.columns if c in groups]
    return df


def load_histories(*paths: str | os.PathLike[str]) -> pd.DataFrame:
    """All history.csv rows with `run_dir`, `seed`, `status` and the group choices of their run."""
    return _load_tables(paths, lambda files: files.read_history(), "history_file")


def load_steps(*paths: str | os.PathLike[str]) -> pd.DataFrame:
    """All steps.csv rows (per-step losses, written with logger=csv), with `run_dir`, `seed`,
    `status` and the group choices of their run; empty when no run logged steps."""
    def read(files: RunDir) -> pd.DataFrame | None:
        path = files.path / STEPS_FILE
        return pd.read_csv(path) if path.is_file() else None
    return _load_tables(paths, read, STEPS_FILE)


def _load_tables(paths: Sequence[str | os.PathLike[str]], read: Any, name: str) -> pd.DataFrame:
    frames = []
    for run in find_run_dirs(*paths):
        files = RunDir(run)
        try:
            table = read(files)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            where = getattr(files, name, files.path / name)
            warnings.warn(f"{where}: unreadable ({err})", RunLoadWarning, stacklevel=3)
            continue
        if table is None:
            continue
        info, groups = _read_run(run)
        keep = {k: info[k] for k in [*groups, "seed", "status", "run_dir"]}
        frames.append(table.assign(**keep))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def group_columns_of(df: pd.DataFrame) -> list[str]:
    """The group-choice columns (`freezing`, `optim`, ...) of a `load_runs` frame."""
    if "group_columns" in df.attrs:
        return [c for c in df.attrs["group_columns"] if c in df.columns]
    return [c for c in df.columns if "." not in c and c not in INFO_COLUMNS
            and c not in ("best_epoch", *CONVERGED)]


def completed_mask(df: pd.DataFrame) -> pd.Series:
    """Runs that completed and whose metrics.json was read: the ones that are aggregated."""
    if df.empty:
        return pd.Series(False, index=df.index)
    has_metrics = df["has_metrics"].astype(bool) if "has_metrics" in df.columns else True
    return df["status"].eq("completed") & has_metrics


def convergence_flags(df: pd.DataFrame) -> pd.Series:
    """Per run: True / False as metrics.json records `converged`, None where it does not."""
    flags = pd.Series(None, index=df.index, dtype=object)
    for column in reversed(CONVERGED):
        if column in df.columns:
            recorded = df[column].map(lambda v: bool(v) if isinstance(v, (bool, np.bool_)) else None)
            flags = recorded.where(recorded.notna(), flags)
    return flags


def trains_nothing(df: pd.DataFrame) -> pd.Series:
    """Per run: True when it took no optimizer step (e.g. freezing=all): convergence does not apply."""
    if "steps" not in df.columns:
        return pd.Series(False, index=df.index)
    return pd.to_numeric(df["steps"], errors="coerce").eq(0)


def convergence_unknown(df: pd.DataFrame) -> pd.Series:
    """Per run: True when it trained but recorded no `converged` (runs that predate the record)."""
    return convergence_flags(df).isna() & ~trains_nothing(df)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Numeric metrics.json columns (dotted names, no `cfg.`), plus `best_epoch`."""
    skip = set(INFO_COLUMNS)
    return [c for c in df.columns
            if c not in skip and not c.startswith("cfg.") and ("." in c or c == "best_epoch")
            and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
            and not c.startswith("labels.")]


def headline_metrics(df: pd.DataFrame) -> list[str]:
    """Test scores per task (`accuracy`, `macro_f1`, `f1`), joint sentence accuracy and `score`
    (the trainer's mean of the tasks' headline scores)."""
    return [c for c in metric_columns(df) if HEADLINE.fullmatch(c)]


def task_headlines(df: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """task -> (kind, headline test column), read from the columns: `test.<task>.accuracy` makes
    a sequence task, `test.<task>.f1` a token task; sequence tasks are listed first."""
    found: dict[str, tuple[str, str]] = {}
    for kind, metric in HEADLINE_METRIC.items():
        for c in df.columns:
            parts = c.split(".")
            if len(parts) == 3 and parts[0] == "test" and parts[2] == metric \
                    and parts[1] != "joint":
                found.setdefault(parts[1], (kind, c))
    return found


def task_metrics(df: pd.DataFrame) -> dict[str, str]:
    """task -> its headline test column: `accuracy` for sequence tasks (listed first), `f1` for
    token tasks."""
    return {task: column for task, (_, column) in task_headlines(df).items()}


def default_metrics(df: pd.DataFrame) -> list[str]:
    cols = metric_columns(df)
    cost = [c for c in cols if c.startswith("cost.")]
    drift = [c for c in ("drift.cka.mean", "drift.sts_spearman_change") if c in cols]
    conv = [c for c in cols if c.startswith("convergence.")]
    return headline_metrics(df) + cost + drift + conv


def mean_ci(values: Iterable[float], level: float = 0.95) -> dict[str, float]:
    """Mean, sample std, t-interval for the mean and n over the finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def value_order(column: str) -> tuple[str, ...]:
    """The preferred order of a group column's values: registered scenarios for `freezing`."""
    return scenario_names() if column == GROUP else VALUE_ORDER.get(column, ())


def sort_groups(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Sort rows by the group columns, known reference values (e.g. `none`) first."""
    def key(col: pd.Series) -> pd.Series:
        order = value_order(str(col.name))
        if pd.api.types.is_numeric_dtype(col):
            return col
        return col.map(lambda v: (order.index(v) if v in order else len(order), str(v)))
    return df.sort_values(list(by), key=key, na_position="last", kind="stable")


def summarize(
    df: pd.DataFrame, by: str | Sequence[str] = (GROUP,), metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per group: run counts (`runs`, `n` completed, `seeds` distinct among them, `failed`,
    `running`, `problems`, `unconverged` completed runs that recorded `converged: false`,
    `convergence_unknown` completed runs that trained and recorded nothing) and, for each metric,
    `<metric>:mean`, `:std`, `:ci_low`, `:ci_high` (95% t-interval over seeds) and `:n`.
    Only completed runs with readable metrics count."""
    by = [by] if isinstance(by, str) else list(by)
    absent = [b for b in by if b not in df.columns]
    if absent:
        raise KeyError(f"cannot group by {absent}: no such column (have {group_columns_of(df)})")
    metrics = [m for m in (metrics or default_metrics(df)) if m in df.columns]
    ok, flags, unknown = completed_mask(df), convergence_flags(df), convergence_unknown(df)
    rows = []
    for key, sub in df.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        good = sub[ok.loc[sub.index]]
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row.update(
            runs=len(sub), n=len(good), seeds=int(good["seed"].nunique()),
            failed=int(sub["status"].eq("failed").sum()),
            running=int(sub["status"].eq("running").sum()),
            problems=int(sub["problems"].fillna("").ne("").sum()) if "problems" in sub else 0,
            unconverged=int(flags.loc[good.index].eq(False).sum()),
            convergence_unknown=int(unknown.loc[good.index].sum()),
        )
        for m in metrics:
            values = pd.to_numeric(good[m], errors="coerce").to_numpy(dtype=float)
            row.update({f"{m}{STAT_SEP}{s}": v for s, v in mean_ci(values).items()})
        rows.append(row)
    out = pd.DataFrame(rows)
    return sort_groups(out, by).reset_index(drop=True) if len(out) else out


def varying_columns(df: pd.DataFrame) -> list[str]:
    """Group columns, and config keys set by overrides, that differ between runs (seed excluded)."""
    cols = [c for c in group_columns_of(df) if df[c].nunique(dropna=False) > 1]
    keys = {m.group(1) for s in df.get("overrides", pd.Series(dtype=str)).dropna()
            for m in re.finditer(r"(?:^|\s)\+*([\w.]+)=", str(s))}
    for key in sorted(keys):
        col = f"cfg.{key}"
        if key != "seed" and col in df.columns and df[col].nunique(dropna=False) > 1:
            cols.append(col)
    return cols


def add_derived(df: pd.DataFrame, histories: pd.DataFrame | None = None,
                steps: pd.DataFrame | None = None) -> pd.DataFrame:
    """Adds `drift.cka.top_minus_bottom`, from history.csv `convergence.first_epoch_share` (the
    first epoch's dev score over the run's best) and from steps.csv `stability.loss_spikes`."""
    layers = sorted((c for c in df.columns if c.startswith("drift.cka.layer_")),
                    key=lambda c: int(c.rsplit("_", 1)[1]) if c.rsplit("_", 1)[1].isdigit() else -1)
    out = df.copy()
    if len(layers) >= 2:
        out["drift.cka.top_minus_bottom"] = out[layers[-1]] - out[layers[0]]
    if histories is not None and {"dev.score", "epoch", "run_dir"} <= set(histories.columns):
        share = histories.dropna(subset=["dev.score"]).groupby("run_dir")[["epoch", "dev.score"]] \
            .apply(first_epoch_share)
        out["convergence.first_epoch_share"] = out["run_dir"].map(share)
    losses = [c for c in (steps.columns if steps is not None else ()) if _is_task_loss(c)]
    if losses and {"step", "run_dir"} <= set(steps.columns):
        total = steps.assign(_loss=steps[losses].sum(axis=1, min_count=1))
        spikes = total.sort_values("step").groupby("run_dir")["_loss"].agg(count_spikes)
        out["stability.loss_spikes"] = out["run_dir"].map(spikes)
    return out


def _is_task_loss(column: str) -> bool:
    parts = column.split(".")
    return len(parts) == 3 and parts[0] == "train" and parts[2] == "loss"


def first_epoch_share(history: pd.DataFrame) -> float:
    """The dev score after the first epoch as a share of the run's best dev score."""
    best = history["dev.score"].max()
    first = history.sort_values("epoch")["dev.score"].iloc[0]
    return float(first / best) if best > 0 else math.nan


def count_spikes(loss: pd.Series, window: int = 10, factor: float = 2.0) -> int:
    """Logged steps whose loss is not finite or exceeds `factor` x the median of the `window`
    logged steps before it."""
    x = loss.to_numpy(dtype=float)
    spikes = int(np.sum(~np.isfinite(x)))
    for i in range(1, len(x)):
        before = x[max(0, i - window):i]
        before = before[np.isfinite(before)]
        if len(before) and np.isfinite(x[i]) and x[i] > factor * np.median(before):
            spikes += 1
    return spikes
