"""What a sweep answers first: test score against training cost, per data set.

`configurations` summarises each configuration of a `load_runs` frame (its headline test score
and its costs, mean and 95% interval over seeds, as `summarize` gives them); `pareto_front` keeps
the configurations that no other one beats on score and every cost at once; `recommendations`
reads off a front the best configuration within each budget (`BUDGETS`), a budget being a share
of full fine-tuning's cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mtexp.results import STAT_SEP, completed_mask, summarize, task_metrics
from mtexp.scenarios import GROUP, scenario_names
from mtexp.tasks import SCORE

SCORE_COLUMN = f"test.{SCORE}"
# The costs a configuration is weighed by, with the word the answer uses for each.
COSTS: dict[str, str] = {
    "cost.train_seconds": "time",
    "cost.train_memory_mb": "memory",
    "cost.params_trainable": "parameters",
}
DATA = "data"
REFERENCE_SCENARIOS = scenario_names(lambda s: s.reference)
# Columns `configurations` adds: the data set's and the configuration's labels, and whether the
# configuration is full fine-tuning (every run of it uses a reference scenario).
DATA_SET, CONFIGURATION, IS_REFERENCE = "data set", "configuration", "reference"


def mean(metric: str) -> str:
    """The summary column of a metric's mean."""
    return f"{metric}{STAT_SEP}mean"


@dataclass(frozen=True)
class Budget:
    """A limit on one cost, `share` x full fine-tuning's mean of it; `cost=None`: no limit."""

    name: str
    cost: str | None = None
    share: float = 1.0


BUDGETS: tuple[Budget, ...] = (
    Budget("best score, any cost"),
    Budget("within half the time of full fine-tuning", "cost.train_seconds", 0.5),
    Budget("within half the training memory of full fine-tuning", "cost.train_memory_mb", 0.5),
)


def score_column(runs: pd.DataFrame) -> str | None:
    """`test.score` (the mean of the tasks' headline test metrics), else the first task's
    headline metric, else None."""
    if SCORE_COLUMN in runs.columns:
        return SCORE_COLUMN
    return next(iter(task_metrics(runs).values()), None)


def data_set_columns(runs: pd.DataFrame, by: Sequence[str]) -> list[str]:
    """What tells data sets apart: the `data` choice (else `cfg.data.name`) and any
    `cfg.data.*` or `data.*` grouping column (e.g. the train fraction of a learning curve)."""
    name = DATA if DATA in runs.columns else "cfg.data.name" if "cfg.data.name" in runs.columns else None
    extra = [b for b in by if b.startswith(("cfg.data.", "data.")) and b != name]
    return ([name] if name else []) + extra


def configuration_columns(runs: pd.DataFrame, by: Sequence[str]) -> list[str]:
    """The grouping columns that are not about the data set: scenario, optimizer preset, ..."""
    data = set(data_set_columns(runs, by))
    return [b for b in by if b not in data]


def _label(row: pd.Series, columns: Sequence[str]) -> str:
    parts = [f"{c.rsplit('.', 1)[-1]}={row[c]}" if "." in c else str(row[c]) for c in columns]
    return " / ".join(parts) or "all runs"


def configurations(runs: pd.DataFrame, by: Sequence[str], score: str | None = None,
                   costs: Sequence[str] = tuple(COSTS)) -> pd.DataFrame:
    """One row per data set and configuration with at least one completed run: the `summarize`
    columns of `score` and of each cost present in `runs`, plus `data set`, `configuration` and
    `reference` (full fine-tuning)."""
    score = score or score_column(runs)
    if score is None or score not in runs.columns:
        return pd.DataFrame()
    data, config = data_set_columns(runs, by), configuration_columns(runs, by)
    if not data and not config:
        runs, config = runs.assign(**{CONFIGURATION: "all runs"}), [CONFIGURATION]
    metrics = [score, *(c for c in costs if c in runs.columns)]
    table = summarize(runs, by=[*data, *config], metrics=metrics)
    table = table[table["n"] > 0].reset_index(drop=True)
    if table.empty:
        return table
    table[DATA_SET] = table.apply(_label, axis=1, columns=data) if data else "all runs"
    table[CONFIGURATION] = table.apply(_label, axis=1, columns=config)
    table[IS_REFERENCE] = _reference_flags(runs, table, [*data, *config])
    return table


def _reference_flags(runs: pd.DataFrame, table: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per row of `table`: whether every completed run of it uses a reference scenario."""
    if GROUP not in runs.columns:
        return pd.Series(False, index=table.index)
    done = runs[completed_mask(runs)]
    full = done[GROUP].isin(REFERENCE_SCENARIOS).groupby(
        [done[k].astype(str) for k in keys]).all()
    wanted = pd.MultiIndex.from_frame(table[keys].astype(str))
    full.index = pd.MultiIndex.from_arrays([full.index.get_level_values(i) for i in range(len(keys))])
    return pd.Series(full.reindex(wanted).fillna(False).to_numpy(bool), index=table.index)


def _oriented(table: pd.DataFrame, score: str, costs: Sequence[str]) -> np.ndarray:
    """Scores and negated costs: larger is better in every column."""
    return np.column_stack([table[score].to_numpy(float),
                            *(-table[c].to_numpy(float) for c in costs)])


def dominated(values: np.ndarray) -> np.ndarray:
    """Per row of `values` (larger is better in every column): whether another row is at least
    as good in every column and better in one. Equal rows do not dominate each other."""
    at_least = (values[None, :, :] >= values[:, None, :]).all(axis=2)
    better = (values[None, :, :] > values[:, None, :]).any(axis=2)
    return (at_least & better).any(axis=1)


def pareto_front(table: pd.DataFrame, score: str, costs: Sequence[str]) -> pd.DataFrame:
    """The rows of `table` that no other row dominates on `score` (higher is better) and
    `costs` (lower is better), best score first; ties stay together.

    Cost columns that `table` lacks or that hold no value are left out of the comparison; a row
    without a score or without a remaining cost cannot be placed and is not on the front."""
    used = [c for c in costs if c in table.columns and table[c].notna().any()]
    if score not in table.columns:
        return table.iloc[0:0]
    placed = table.dropna(subset=[score, *used])
    if placed.empty:
        return placed
    keep = ~dominated(_oriented(placed, score, used))
    front = placed[keep]
    return front.sort_values([score, *used], ascending=[False, *[True] * len(used)], kind="stable")


def configuration_front(table: pd.DataFrame, score: str,
                        costs: Sequence[str] = tuple(COSTS)) -> pd.DataFrame:
    """`pareto_front` of a `configurations` table on the means of `score` and `costs`."""
    return pareto_front(table, mean(score), [mean(c) for c in costs])


def reference_of(table: pd.DataFrame) -> pd.Series | None:
    """Full fine-tuning's row: the first configuration flagged `reference` (with several
    optimizer presets, the first in the report's order), else None."""
    if IS_REFERENCE not in table.columns:
        return None
    rows = table[table[IS_REFERENCE].astype(bool)]
    return rows.iloc[0] if len(rows) else None


@dataclass(frozen=True)
class Recommendation:
    """The best configuration within a budget (`row` None when none fits or no limit could be
    set), the limit in the cost's units, and the other configurations within the budget whose
    mean score lies inside the chosen one's interval."""

    budget: Budget
    limit: float | None
    row: pd.Series | None
    close: tuple[str, ...] = ()
    reason: str = ""


def recommendations(front: pd.DataFrame, score: str, reference: pd.Series | None,
                    budgets: Sequence[Budget] = BUDGETS,
                    table: pd.DataFrame | None = None) -> list[Recommendation]:
    """Per budget, the front's best-scoring configuration within it (ties: the cheaper one on
    the budget's cost), and the configurations of `table` (default: the front) within the budget
    whose mean score lies inside its interval. A budget on a cost without a reference mean
    recommends nothing and says why."""
    table = front if table is None else table
    out = []
    for budget in budgets:
        if budget.cost is None:
            out.append(_best(budget, None, front, table, score))
            continue
        ref = reference.get(mean(budget.cost)) if reference is not None else None
        if ref is None or pd.isna(ref):
            reason = "no full fine-tuning runs to set the limit" if reference is None else \
                "full fine-tuning did not record this cost"
            out.append(Recommendation(budget, None, None, reason=reason))
            continue
        limit = budget.share * float(ref)
        out.append(_best(budget, limit, _within(front, budget.cost, limit),
                         _within(table, budget.cost, limit), score))
    return out


def _within(table: pd.DataFrame, cost: str, limit: float) -> pd.DataFrame:
    column = mean(cost)
    return table[table[column].le(limit)] if column in table else table.iloc[0:0]


def _best(budget: Budget, limit: float | None, fits: pd.DataFrame, others: pd.DataFrame,
          score: str) -> Recommendation:
    if fits.empty:
        return Recommendation(budget, limit, None, reason="no configuration within the limit")
    order = [mean(score)] + ([mean(budget.cost)] if budget.cost and mean(budget.cost) in fits else [])
    best = fits.sort_values(order, ascending=[False, *[True] * (len(order) - 1)], kind="stable").iloc[0]
    low, high = best.get(f"{score}{STAT_SEP}ci_low"), best.get(f"{score}{STAT_SEP}ci_high")
    close: tuple[str, ...] = ()
    if pd.notna(low) and pd.notna(high):
        rest = others[others[CONFIGURATION] != best[CONFIGURATION]]
        rest = rest.sort_values(mean(score), ascending=False, kind="stable")
        close = tuple(rest.loc[rest[mean(score)].between(low, high), CONFIGURATION].astype(str))
    return Recommendation(budget, limit, best, close)
