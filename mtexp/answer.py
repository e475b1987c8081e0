"""The report's first section as tables: per data set, the configurations on the Pareto front of
test score against training cost and the best one per budget (`front_answers`); and, for runs of
several data sets, each claim's verdict per data set with the claims where they disagree
(`verdicts_by_data_set`).

Tables are (header, rows) of strings, rendered as Markdown or HTML by `mtexp.report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from mtexp import front
from mtexp.claims import ClaimResult, evaluate_claims
from mtexp.formatting import metric_kind, number, with_interval
from mtexp.results import STAT_SEP
from mtexp.verdicts import MISSING, NOT_MEASURABLE

Table = tuple[list[str], list[list[str]]]
COST_HEADERS = {"cost.train_seconds": "training time", "cost.train_memory_mb": "training memory",
                "cost.params_trainable": "trainable parameters"}
UNDECIDED = (MISSING, NOT_MEASURABLE)


@dataclass(frozen=True)
class DataSetAnswer:
    """One data set's answer: its front and its recommendations, as tables."""

    data_set: str
    front: Table
    recommendations: Table
    reference: str | None


def _score(row: pd.Series, score: str) -> str:
    get = lambda s: row.get(f"{score}{STAT_SEP}{s}")  # noqa: E731
    return with_interval(get("mean"), get("ci_low"), get("ci_high"))


def _costs(row: pd.Series, costs: Sequence[str]) -> list[str]:
    return [number(row.get(front.mean(c)), metric_kind(c)) for c in costs]


def _front_table(table: pd.DataFrame, rows: pd.DataFrame, score: str, costs: Sequence[str],
                 reference: pd.Series | None) -> Table:
    header = ["configuration", "n", f"{score} [95% CI]", *(COST_HEADERS[c] for c in costs)]
    shown = rows
    if reference is not None and reference[front.CONFIGURATION] not in set(rows[front.CONFIGURATION]):
        shown = pd.concat([rows, reference.to_frame().T])
    body = []
    for _, row in shown.iterrows():
        name = str(row[front.CONFIGURATION])
        if reference is not None and name == reference[front.CONFIGURATION]:
            on = name in set(rows[front.CONFIGURATION])
            name += " (full fine-tuning" + ("" if on else ", not on the front") + ")"
        body.append([name, str(int(row["n"])), _score(row, score), *_costs(row, costs)])
    return header, body


def _budget_text(rec: front.Recommendation) -> str:
    if rec.limit is None or rec.budget.cost is None:
        return rec.budget.name
    return f"{rec.budget.name} (≤ {number(rec.limit, metric_kind(rec.budget.cost))})"


def _recommendation_table(recs: list[front.Recommendation], score: str, costs: Sequence[str]) -> Table:
    header = ["budget", "configuration", f"{score} [95% CI]", *(COST_HEADERS[c] for c in costs),
              "also within its interval"]
    body = []
    for rec in recs:
        if rec.row is None:
            body.append([_budget_text(rec), f"none: {rec.reason}", "–", *["–"] * len(costs), "–"])
            continue
        body.append([_budget_text(rec), str(rec.row[front.CONFIGURATION]), _score(rec.row, score),
                     *_costs(rec.row, costs), ", ".join(rec.close) or "–"])
    return header, body


def front_answers(runs: pd.DataFrame, by: Sequence[str]) -> list[DataSetAnswer]:
    """Per data set of `runs` (a `load_runs` frame grouped by `by`): the front and the
    recommendations; [] when the runs have no test score."""
    score = front.score_column(runs)
    table = front.configurations(runs, by, score)
    if score is None or table.empty:
        return []
    costs = [c for c in front.COSTS if table.get(front.mean(c), pd.Series(dtype=float)).notna().any()]
    answers = []
    for data_set, sub in table.groupby(front.DATA_SET, sort=False):
        rows = front.configuration_front(sub, score, costs)
        reference = front.reference_of(sub)
        budgets = [b for b in front.BUDGETS if b.cost is None or b.cost in costs]
        recs = front.recommendations(rows, score, reference, budgets, table=sub)
        answers.append(DataSetAnswer(
            str(data_set), _front_table(sub, rows, score, costs, reference),
            _recommendation_table(recs, score, costs),
            None if reference is None else str(reference[front.CONFIGURATION])))
    return answers


def data_sets(runs: pd.DataFrame) -> list[str]:
    """The data sets the runs cover (`data` choice, else `cfg.data.name`), in order of appearance."""
    column = front.data_set_columns(runs, ())
    return [str(v) for v in dict.fromkeys(runs[column[0]].dropna())] if column else []


def claims_per_data_set(runs: pd.DataFrame, histories: pd.DataFrame,
                        steps: pd.DataFrame) -> dict[str, list[ClaimResult]]:
    """Every claim evaluated on each data set's runs alone; {} for runs of one data set."""
    names = data_sets(runs)
    if len(names) < 2:
        return {}
    column = front.data_set_columns(runs, ())[0]
    pick = lambda df, name: df[df[column].astype(str) == name] if column in df.columns else df  # noqa: E731
    return {name: evaluate_claims(pick(runs, name), pick(histories, name), steps=pick(steps, name))
            for name in names}


def verdicts_by_data_set(results: dict[str, list[ClaimResult]]) -> tuple[Table, list[str]]:
    """One row per claim with its verdict on each data set and whether they agree; and one line
    per claim whose decided verdicts (missing runs and not measurable left out) differ."""
    names = list(results)
    header = ["claim", "scenario", *names, "across data sets"]
    rows, disagree = [], []
    for per_set in zip(*results.values(), strict=True):
        spec = per_set[0].spec
        verdicts = [res.verdict for res in per_set]
        decided = {v for v in verdicts if v not in UNDECIDED}
        state = "not decided" if not decided else "agree" if len(decided) == 1 else "disagree"
        if state == "disagree":
            disagree.append(f"{spec.id}: " + "; ".join(
                f"{name} {verdict}" for name, verdict in zip(names, verdicts, strict=True)))
        rows.append([spec.id, spec.scenario, *verdicts, state])
    return (header, rows), disagree
