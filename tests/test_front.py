"""The Pareto front of score against cost and the recommendations per budget, on hand-made
tables; the readable numbers of the reports."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from mtexp import front
from mtexp.answer import front_answers, verdicts_by_data_set
from mtexp.formatting import estimate, metric_kind, number, with_interval


def table(rows: dict[str, tuple[float, ...]],
          columns: tuple[str, ...] = ("score", "time", "memory")) -> pd.DataFrame:
    return pd.DataFrame([{"configuration": name, **dict(zip(columns, values, strict=True))}
                         for name, values in rows.items()])


def names(df: pd.DataFrame) -> list[str]:
    return df["configuration"].tolist()


def test_dominated_points_are_dropped() -> None:
    t = table({"full": (0.96, 300, 800), "head": (0.95, 290, 130), "worse": (0.94, 300, 900),
               "probe": (0.66, 40, 45), "slow_probe": (0.60, 50, 45)})
    assert names(front.pareto_front(t, "score", ["time", "memory"])) == ["full", "head", "probe"]
    # on time alone, `head` beats `full` only on memory, which no longer counts: both stay
    assert names(front.pareto_front(t, "score", ["time"])) == ["full", "head", "probe"]
    assert names(front.pareto_front(t, "score", [])) == ["full"]


def test_ties_stay_together_and_equal_score_at_lower_cost_wins() -> None:
    t = table({"a": (0.9, 100, 50), "b": (0.9, 100, 50), "c": (0.9, 120, 50), "d": (0.8, 10, 5)})
    assert names(front.pareto_front(t, "score", ["time", "memory"])) == ["a", "b", "d"]


def test_a_single_configuration_is_its_own_front() -> None:
    t = table({"only": (0.5, 10, 1)})
    assert names(front.pareto_front(t, "score", ["time", "memory"])) == ["only"]
    rec = front.recommendations(t.rename(columns={"score": "s:mean"}), "s", None,
                                front.BUDGETS[:1])[0]
    assert rec.row is not None and rec.row["configuration"] == "only" and rec.close == ()


def test_missing_cost_columns_are_left_out_and_unplaced_rows_dropped() -> None:
    t = table({"a": (0.9, 100), "b": (0.8, 10), "c": (float("nan"), 1)}, ("score", "time"))
    assert names(front.pareto_front(t, "score", ["time", "memory", "params"])) == ["a", "b"]
    t["memory"] = float("nan")  # a column without a value is left out too
    assert names(front.pareto_front(t, "score", ["time", "memory"])) == ["a", "b"]
    t.loc[1, "memory"] = 3.0  # now it counts: rows without it cannot be placed
    assert names(front.pareto_front(t, "score", ["time", "memory"])) == ["b"]
    assert front.pareto_front(t, "nope", ["time"]).empty


def summary_row(name: str, score: tuple[float, float, float], time: float, memory: float,
                reference: bool = False) -> dict[str, Any]:
    mean, low, high = score
    return {"configuration": name, "reference": reference, "n": 3, "s:mean": mean, "s:ci_low": low,
            "s:ci_high": high, "cost.train_seconds:mean": time, "cost.train_memory_mb:mean": memory}


def test_recommendations_per_budget() -> None:
    rows = pd.DataFrame([
        summary_row("full", (0.96, 0.95, 0.97), 300, 800, reference=True),
        summary_row("head", (0.955, 0.94, 0.97), 290, 130),
        summary_row("partial", (0.93, 0.92, 0.94), 140, 45),
        summary_row("probe", (0.66, 0.65, 0.67), 40, 45),
    ])
    recs = front.recommendations(rows, "s", front.reference_of(rows))
    best, fast, light = recs
    assert best.row["configuration"] == "full" and best.limit is None and best.close == ("head",)
    assert fast.limit == pytest.approx(150) and fast.row["configuration"] == "partial"
    assert light.limit == pytest.approx(400) and light.row["configuration"] == "head"
    tight = front.Budget("a tenth of the time", "cost.train_seconds", 0.1)
    (none,) = front.recommendations(rows, "s", front.reference_of(rows), (tight,))
    assert none.row is None and none.reason == "no configuration within the limit"
    (no_ref,) = front.recommendations(rows, "s", None, front.BUDGETS[1:2])
    assert no_ref.row is None and "no full fine-tuning" in no_ref.reason
    # a beaten configuration is never recommended, yet is named when as good within the interval
    beaten = pd.concat([rows, pd.DataFrame([summary_row("slow", (0.958, 0.95, 0.966), 320, 900)])])
    best, fast, _ = front.recommendations(rows, "s", front.reference_of(rows), table=beaten)
    assert best.row["configuration"] == "full" and best.close == ("slow", "head")
    assert fast.row["configuration"] == "partial" and fast.close == ()


def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    base = {"status": "completed", "has_metrics": True, "problems": "", "error": None}
    df = pd.DataFrame([{**base, "run_dir": f"run{i}", **r} for i, r in enumerate(rows)])
    df.attrs["group_columns"] = ["data", "freezing"]
    return df


def run(data: str, freezing: str, seed: int, score: float, seconds: float, memory: float,
        params: int) -> dict[str, Any]:
    return {"data": data, "freezing": freezing, "seed": seed, "test.score": score,
            "cost.train_seconds": seconds, "cost.train_memory_mb": memory,
            "cost.params_trainable": params}


def test_configurations_and_answers_per_data_set() -> None:
    rows = []
    for seed, noise in enumerate((0.0, 0.004, -0.004)):
        rows += [run("snips", "none", seed, 0.96 + noise, 300 + seed, 800, 22_600_000),
                 run("snips", "backbone", seed, 0.66 + noise, 40, 45, 33_000),
                 run("snips", "gradual", seed, 0.60 + noise, 100, 45, 3_600_000),
                 run("atis", "none", seed, 0.91 + noise, 120, 900, 22_600_000),
                 run("atis", "head_a", seed, 0.905 + noise, 55, 250, 22_600_000)]
    df = runs_frame(rows)
    configs = front.configurations(df, ["freezing"])
    assert configs.groupby("data set", sort=False)["configuration"].apply(list).to_dict() == {
        "snips": ["none", "backbone", "gradual"], "atis": ["none", "head_a"]}
    assert configs.loc[configs["reference"], "configuration"].tolist() == ["none", "none"]
    atis, snips = front_answers(df, ["freezing"])  # data sets in sorted order
    assert snips.data_set == "snips" and snips.reference == "none"
    header, body = snips.front
    assert header == ["configuration", "n", "test.score [95% CI]", "training time", "training memory",
                      "trainable parameters"]
    assert [r[0] for r in body] == ["none (full fine-tuning)", "backbone"]  # gradual is beaten
    assert body[0][3:] == ["5.02 min", "800 MB", "22.6M"] and body[1][3:] == ["40.0 s", "45.0 MB", "33.0k"]
    _, recs = atis.recommendations
    assert [r[1] for r in recs] == ["none", "head_a", "head_a"]
    assert recs[0][0] == "best score, any cost" and recs[0][-1] == "head_a"  # within none's interval
    assert recs[1][0] == "within half the time of full fine-tuning (≤ 1.00 min)"


def test_verdicts_by_data_set_name_the_disagreement() -> None:
    class Spec:
        def __init__(self, claim: str) -> None:
            self.id, self.scenario = claim, f"scenario of {claim}"

    class Result:
        def __init__(self, claim: str, verdict: str) -> None:
            self.spec, self.verdict = Spec(claim), verdict

    results = {"snips": [Result("F2", "supported"), Result("F5", "inconclusive"),
                         Result("L1", "inconclusive (missing runs)")],
               "builtin": [Result("F2", "supported"), Result("F5", "contradicted"),
                           Result("L1", "supported")]}
    (header, rows), disagree = verdicts_by_data_set(results)  # type: ignore[arg-type]
    assert header == ["claim", "scenario", "snips", "builtin", "across data sets"]
    assert [r[-1] for r in rows] == ["agree", "disagree", "agree"]  # missing runs do not vote
    assert disagree == ["F5: snips inconclusive; builtin contradicted"]


def test_readable_numbers() -> None:
    assert estimate(22_598_486, 0, 22_598_486, 22_598_486, "count") == "22.6M exact"
    assert estimate(276.4, 65.3, 114.2, 438.6, "seconds") == "4.61 ± 1.09 [1.90, 7.31] min"
    assert estimate(44.0, 11.9, 14.5, 73.4, "seconds") == "44.0 ± 11.9 [14.5, 73.4] s"
    assert estimate(0.9619, 0.0018, 0.9574, 0.9664) == "0.962 ± 0.002 [0.957, 0.966]"
    assert estimate(0.9585, 0.0005, 0.9573, 0.9597) == "0.959 ± 0.0005 [0.957, 0.960]"
    assert estimate(1635, 19, 1589, 1681, "megabytes") == "1.60 ± 0.02 [1.55, 1.64] GB"
    assert estimate(0.97, float("nan"), float("nan"), float("nan")) == "0.970"
    assert estimate(44.7, 7e-15, 44.7 - 2e-14, 44.7 + 2e-14, "megabytes") == "44.7 MB exact"
    assert estimate(float("nan")) == "–"
    assert number(33_110, "count") == "33.1k" and number(3, "count") == "3" and number(12_345.6) == "12,300"
    assert number(7200, "seconds") == "2.00 h" and number(-0.000123) == "-0.000123"
    assert with_interval(0.9619, 0.9574, 0.9664) == "0.962 [0.957, 0.966]"
    assert with_interval(5, 5, 5, "count") == "5 exact"
    kinds = {m: metric_kind(m) for m in ("cost.train_seconds", "cost.seconds_per_epoch",
                                         "cost.train_samples_per_second", "cost.train_memory_mb",
                                         "cost.params_trainable", "convergence.best_epoch",
                                         "test.score")}
    assert list(kinds.values()) == ["seconds", "seconds", "plain", "megabytes", "count", "count", "plain"]
