"""The verdict rule on hand-built run tables: each degenerate case, parts, controls, P1/P2."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from mtexp.claims import CLAIMS, FROZEN_HEADS, claims_overview, evaluate_claims
from mtexp.results import count_spikes
from mtexp.scenarios import FrozenHead, scenario_names
from mtexp.verdicts import (
    CONSTRUCTION,
    CONTRADICTED,
    CONTROL,
    INCONCLUSIVE,
    MISSING,
    MIXED,
    NOT_MEASURABLE,
    NOT_MEASURED,
    RULE,
    SUPPORTED,
    Estimate,
    chance_level,
    combine,
    decide,
    rule_for,
    rules_table,
)

SEEDS = (0, 1, 2)


def runs_frame(rows: list[dict[str, Any]], groups: tuple[str, ...] = ("freezing", "optim")) -> pd.DataFrame:
    """A load_runs-like frame of completed runs."""
    base = {"status": "completed", "has_metrics": True, "problems": "", "error": None}
    df = pd.DataFrame([{**base, "run_dir": f"run{i}", **r} for i, r in enumerate(rows)])
    df.attrs["group_columns"] = list(groups)
    return df


def runs(freezing: str, seeds: tuple[int, ...] = SEEDS, optim: str = "adamw",
         **metrics: tuple[float, ...]) -> list[dict[str, Any]]:
    """Runs of one configuration; `test__slots__f1=(...)` gives one value per seed."""
    return [{"freezing": freezing, "optim": optim, "seed": s,
             **{k.replace("__", "."): v[i] for k, v in metrics.items()}} for i, s in enumerate(seeds)]


def claims(df: pd.DataFrame, **kwargs: Any) -> dict[str, Any]:
    return {r.spec.id: r for r in evaluate_claims(df, **kwargs)}


def row(result: Any, metric: str, treatment: str | None = None) -> pd.Series:
    ev = result.evidence
    ev = ev[ev["metric"] == metric]
    if treatment is not None:
        ev = ev[ev["treatment"].str.startswith(treatment)]
    assert len(ev) == 1, ev
    return ev.iloc[0]


# ----- one check ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.006, 0.020, SUPPORTED),       # beyond +0.005
    (0.001, 0.005, INCONCLUSIVE),    # above zero, not beyond the minimum effect
    (-0.028, 0.006, INCONCLUSIVE),   # spans zero (F5 on ATIS once read 'contradicted')
    (-0.020, -0.006, CONTRADICTED),  # beyond -0.005
    (-0.006, -0.001, INCONCLUSIVE),  # below zero, not beyond the minimum effect
])
def test_support_and_contradiction_need_the_interval_beyond_the_minimum_effect(
        low: float, high: float, expected: str) -> None:
    est = Estimate((low + high) / 2, low, high, 3, 0.01)
    rule = rule_for("test.slots.f1")
    assert decide(est, "higher", rule, rule.minimum).verdict == expected
    flipped = Estimate(-est.effect, -high, -low, 3, 0.01)
    assert decide(flipped, "lower", rule, rule.minimum).verdict == expected


def test_non_inferiority_uses_the_margin() -> None:
    rule = rule_for("test.intent.accuracy")
    assert decide(Estimate(-0.002, -0.004, 0.0, 3, 0.01), "not_lower", rule, 0.005).verdict == SUPPORTED
    assert decide(Estimate(-0.008, -0.009, -0.006, 3, 0.01), "not_lower", rule, 0.005).verdict \
        == CONTRADICTED
    assert decide(Estimate(-0.008, -0.009, -0.006, 3, 0.01), "not_lower", rule, 0.005,
                  margin=0.01).verdict == SUPPORTED


def test_zero_variance_does_not_vote_unless_the_quantity_is_exact() -> None:
    flat = Estimate(1.0, 1.0, 1.0, 3, 0.0)
    epochs = rule_for("convergence.epochs_to_95pct")
    decision = decide(flat, "lower", epochs, epochs.minimum)
    assert decision.verdict == NOT_MEASURABLE and "zero variance" in decision.note
    memory = rule_for("cost.train_memory_mb")  # deterministic accounting: the effect is exact
    exact = decide(Estimate(-300.0, -300.0, -300.0, 3, 0.0), "lower", memory, 20.0)
    assert exact.verdict == SUPPORTED and exact.note == "exact (no seed noise)"
    rounding = Estimate(0.03, 0.03, 0.03, 3, 1e-17)  # equal up to float rounding
    assert decide(rounding, "higher", rule_for("test.slots.f1"), 0.005).verdict == NOT_MEASURABLE
    varied = decide(Estimate(-1.0, -3.5, 1.5, 3, 1.0), "lower", epochs, epochs.minimum)
    assert varied.verdict == INCONCLUSIVE and varied.note == "integer count"


def test_chance_levels() -> None:
    assert chance_level("test.intent.accuracy", labels=7) == pytest.approx(1 / 7)
    assert chance_level("test.intent.accuracy") == 0.05
    assert chance_level("test.slots.f1") == 0.05
    assert chance_level("cost.train_memory_mb") is None
    est = Estimate(0.0036, 0.0005, 0.0067, 3, 0.001)
    decision = decide(est, "higher", rule_for("test.slots.f1"), 0.005, at_chance=0.05)
    assert decision.verdict == NOT_MEASURABLE and "chance (0.05)" in decision.note


@pytest.mark.parametrize(("votes", "expected"), [
    ([SUPPORTED, SUPPORTED], SUPPORTED),
    ([SUPPORTED, CONTRADICTED], MIXED),
    ([SUPPORTED, INCONCLUSIVE], INCONCLUSIVE),
    ([CONTRADICTED, INCONCLUSIVE], CONTRADICTED),
    ([MIXED, SUPPORTED], MIXED),
    ([SUPPORTED, NOT_MEASURABLE, "context"], SUPPORTED),  # what cannot vote does not
    ([NOT_MEASURABLE, "control"], NOT_MEASURABLE),
    ([NOT_MEASURED], MISSING),
    ([], MISSING),
])
def test_combine(votes: list[str], expected: str) -> None:
    assert combine(votes) == expected


def test_rule_and_minimum_effects_are_stated() -> None:
    header, rows = rules_table()
    assert header[:3] == ["metric", "minimum effect", "chance level"]
    stated = {r[0]: r[1] for r in rows}
    assert stated["test.*.accuracy"] == "0.5 points (0.005)" and stated["cost.*"] == "5% of the reference"
    for phrase in ("minimum effect", "chance", "zero variance", "by construction", "steps.csv",
                   "supported only when every voting part is supported", "converged: false"):
        assert phrase in RULE


# ----- claims on run tables -----------------------------------------------------------------------
def test_both_at_chance_is_not_measurable_never_support() -> None:
    """F4 at train_fraction=0.01: full fine-tuning scores slot F1 0, the frozen encoder 0.0036."""
    frac = {"cfg__data__train_fraction": (0.01,) * 3}
    df = runs_frame(
        runs("none", test__slots__f1=(0.0, 0.0, 0.0), test__intent__accuracy=(0.55, 0.60, 0.59),
             labels__intent=(7, 7, 7), **frac)
        + runs("backbone", test__slots__f1=(0.0024, 0.0048, 0.0036),
               test__intent__accuracy=(0.10, 0.13, 0.11), labels__intent=(7, 7, 7), **frac))
    f4 = claims(df)["F4"]
    slots = row(f4, "test.slots.f1")
    assert slots["verdict"] == NOT_MEASURABLE and "chance" in slots["note"]
    intent = row(f4, "test.intent.accuracy")  # 0.11 is below 1/7, 0.58 is not: measurable
    assert intent["verdict"] == CONTRADICTED
    assert f4.verdict == CONTRADICTED


def test_accuracy_chance_comes_from_the_label_count() -> None:
    quality = {"test__intent__accuracy": (0.10, 0.12, 0.11)}
    better = {"test__intent__accuracy": (0.13, 0.14, 0.135)}
    for labels, expected in ((7, NOT_MEASURABLE), (None, SUPPORTED)):
        extra = {"labels__intent": (labels,) * 3} if labels else {}
        df = runs_frame(runs("none", optim="adamw", **quality, **extra)
                        + runs("none", optim="llrd", **better, **extra))
        assert row(claims(df)["L4"], "test.intent.accuracy")["verdict"] == expected


def test_mixed_evidence_shows_its_parts() -> None:
    """Gradual unfreezing: less drift (supported) at a large slot-F1 cost (contradicted)."""
    df = runs_frame(
        runs("none", drift__cka__mean=(0.70, 0.71, 0.69), test__intent__accuracy=(0.985, 0.983, 0.987),
             test__slots__f1=(0.94, 0.935, 0.941))
        + runs("gradual", drift__cka__mean=(0.92, 0.93, 0.925),
               test__intent__accuracy=(0.969, 0.970, 0.968), test__slots__f1=(0.63, 0.625, 0.64)))
    f6 = claims(df)["F6"]
    assert f6.verdict == MIXED
    parts = {p.name: p for p in f6.parts}
    assert parts["drift"].verdict == SUPPORTED
    assert parts["quality"].verdict == CONTRADICTED
    assert str(parts["quality"]).startswith("quality: contradicted, slots F1 -0.3")  # the worst row
    overview = claims_overview(list(claims(df).values())).set_index("id")
    assert "quality: contradicted, slots F1" in overview.loc["F6", "parts"]


def test_checks_true_by_construction_and_controls_never_vote() -> None:
    frac = {"cfg__data__train_fraction": (0.05,) * 3}
    full = {"cfg__data__train_fraction": (1.0,) * 3}
    df = runs_frame(
        runs("none", cost__seconds_per_epoch=(7.0, 6.5, 7.2), cost__train_memory_mb=(210, 215, 212),
             test__intent__accuracy=(0.94, 0.945, 0.94), **frac)
        + runs("backbone", cost__seconds_per_epoch=(4.0, 4.5, 4.1), cost__train_memory_mb=(45, 44, 46),
               test__intent__accuracy=(0.20, 0.18, 0.22), **frac)
        + runs("none", cost__seconds_per_epoch=(90, 92, 95), test__intent__accuracy=(0.98, 0.985, 0.99),
               **full)
        + runs("all", cost__seconds_per_epoch=(0.0, 0.0, 0.0), test__intent__accuracy=(0.1, 0.09, 0.1),
               **full))
    f1 = claims(df)["F1"]
    control = f1.evidence[f1.evidence["treatment"].str.contains("freezing=all")]
    assert len(control) and set(control["role"]) == {CONTROL} and set(control["verdict"]) == {CONTROL}
    assert f1.verdict == MIXED  # faster and lighter, but far worse with 5% of the data
    assert {p.name: p.verdict for p in f1.parts} == {
        "speed": SUPPORTED, "memory": SUPPORTED, "quality": CONTRADICTED, "overfitting": NOT_MEASURED}

    df = runs_frame(
        runs("none", test__intent__accuracy=(0.94, 0.945, 0.94), drift__cka__mean=(0.70, 0.72, 0.69),
             drift__sts_spearman_change=(-0.30, -0.35, -0.40), cost__params_trainable=(2e7,) * 3)
        + runs("backbone", test__intent__accuracy=(0.90, 0.91, 0.89), drift__cka__mean=(1.0, 1.0, 1.0),
               drift__sts_spearman_change=(0.0, 0.0, 0.0), cost__params_trainable=(3e4,) * 3))
    res = claims(df)
    f2 = row(res["F2"], "cost.params_trainable")
    assert f2["role"] == CONSTRUCTION and f2["verdict"] == CONSTRUCTION
    f3 = res["F3"]
    assert set(f3.evidence.loc[f3.evidence["effect_kind"] == "paired diff", "role"]) == {CONSTRUCTION}
    assert [p.name for p in f3.parts] == ["forgetting avoided"]  # only the reference's drop votes
    assert f3.verdict == SUPPORTED
    only_construction = runs_frame(
        runs("none", drift__cka__mean=(0.70, 0.72, 0.69))
        + runs("backbone", drift__cka__mean=(1.0, 1.0, 1.0)))
    assert claims(only_construction)["F3"].verdict == MISSING  # CKA 1 of a frozen encoder: no vote


def test_within_reads_only_the_reference_configuration() -> None:
    """freezing=none runs of six optimizers are not six times the seeds of one."""
    top = {"drift__cka__top_minus_bottom": (-0.60, -0.62, -0.61)}
    df = runs_frame(
        runs("none", optim="adamw", test__intent__accuracy=(0.98, 0.99, 0.985), **top)
        + runs("none", optim="llrd", test__intent__accuracy=(0.98, 0.99, 0.985),
               drift__cka__top_minus_bottom=(0.40, 0.50, 0.45))
        + runs("gradual", optim="adamw", test__intent__accuracy=(0.97, 0.975, 0.972)))
    within = row(claims(df)["F6"], "drift.cka.top_minus_bottom")
    assert within["n"] == 3 and within["treatment"] == "freezing=none optim=adamw runs"
    assert within["treatment_mean"] == pytest.approx(-0.61) and within["verdict"] == SUPPORTED
    no_gradual = runs_frame([r for r in df.to_dict("records") if r["freezing"] == "none"])
    assert claims(no_gradual)["F6"].verdict == MISSING  # no pooled 'within' row without a scenario


def test_integer_counts_with_zero_variance_do_not_decide_l2() -> None:
    df = runs_frame(runs("none", optim="adamw", convergence__epochs_to_95pct=(1, 1, 1))
                    + runs("none", optim="llrd", convergence__epochs_to_95pct=(2, 2, 2)))
    l2 = claims(df)["L2"]
    epochs = row(l2, "convergence.epochs_to_95pct")
    assert epochs["verdict"] == NOT_MEASURABLE and "zero variance" in epochs["note"]
    assert l2.verdict == NOT_MEASURABLE
    shares = (0.96, 0.97, 0.965, 0.91, 0.92, 0.90)  # adamw runs, then llrd runs
    hist = pd.DataFrame([{"run_dir": f"run{i}", "epoch": epoch, "dev.score": score}
                         for i, share in enumerate(shares)
                         for epoch, score in ((1, 0.9 * share), (2, 0.9))])
    l2 = claims(df, histories=hist)["L2"]
    share = row(l2, "convergence.first_epoch_share")
    assert share["effect"] == pytest.approx(-0.055) and share["verdict"] == CONTRADICTED
    assert l2.verdict == CONTRADICTED


def test_spikes_come_from_per_step_losses_only() -> None:
    df = runs_frame(runs("none", optim="adamw", test__intent__accuracy=(0.90, 0.95, 0.85))
                    + runs("none", optim="llrd", test__intent__accuracy=(0.91, 0.92, 0.90)))
    epochs = pd.DataFrame([{"run_dir": f"run{i}", "epoch": e, "train.loss": loss}
                           for i in range(6) for e, loss in ((1, 1.0), (2, 1.5), (3, 0.5))])
    l3 = claims(df, histories=epochs)["L3"]  # three per-epoch losses are no evidence of spikes
    assert "stability.loss_spikes" not in set(l3.evidence["metric"])
    assert any("not measured" in n and "steps.csv" in n for n in l3.notes)
    assert {p.name: p.verdict for p in l3.parts}["loss spikes"] == NOT_MEASURED
    assert count_spikes(pd.Series([2.0, 2.1, 1.9, 5.0, 2.0, float("nan"), 1.8])) == 2
    assert count_spikes(pd.Series([1.0, 1.5, 0.5])) == 0  # +50% is no spike (2x the median)


def test_memory_is_training_memory_never_the_process_peak() -> None:
    df = runs_frame(runs("none", cost__peak_memory_mb=(1600, 1650, 1620),
                         cost__seconds_per_epoch=(90, 92, 95))
                    + runs("backbone", cost__peak_memory_mb=(1900, 1950, 1920),
                           cost__seconds_per_epoch=(14, 15, 14.5)))
    f2 = claims(df)["F2"]
    assert "cost.peak_memory_mb" not in set(f2.evidence["metric"])
    assert {p.name: p.verdict for p in f2.parts} == {"speed": SUPPORTED, "memory": NOT_MEASURED}
    assert f2.verdict == SUPPORTED


def test_unconverged_runs_are_counted_in_the_evidence() -> None:
    df = runs_frame(runs("none", optim="adamw", test__intent__accuracy=(0.95, 0.96, 0.94))
                    + runs("none", optim="llrd", test__intent__accuracy=(0.92, 0.935, 0.905)))
    assert row(claims(df)["L4"], "test.intent.accuracy")["unconverged"] == "unknown"
    df["converged"] = [True, True, True, False, True, None]
    assert row(claims(df)["L4"], "test.intent.accuracy")["unconverged"] == "1 of 6 (1 unknown)"


def test_f5_reads_the_frozen_head_scenarios_of_the_registry() -> None:
    f5 = next(spec for spec in CLAIMS if spec.id == "F5")
    assert f5.values == FROZEN_HEADS == scenario_names(lambda s: issubclass(s, FrozenHead))
    assert "freezing.after_epochs=N" in f5.note and "loss weight is unchanged" in f5.note
    df = runs_frame(runs("none", test__intent__accuracy=(0.96, 0.962, 0.958),
                         test__slots__f1=(0.8646, 0.85, 0.88))
                    + runs("head_a", test__intent__accuracy=(0.1, 0.1, 0.1),
                           test__slots__f1=(0.8537, 0.845, 0.862)))
    untrained = claims(df)["F5"]  # a run without the setting froze its head at random weights
    assert row(untrained, "test.slots.f1")["verdict"] == CONTROL
    assert untrained.verdict == MISSING and "freezing=head_a (control) are controls" in untrained.missing
    df["cfg.freezing.after_epochs"] = [None, None, None, 0, 0, 0]
    at_start = row(claims(df)["F5"], "test.slots.f1")["treatment"]
    assert at_start == "freezing=head_a freezing.after_epochs=0 (control)"
    df["cfg.freezing.after_epochs"] = [None, None, None, 1, 1, 1]
    trained = claims(df)["F5"]
    other = row(trained, "test.slots.f1")  # -0.011 [-0.03, 0.01]: no longer 'contradicted'
    assert other["treatment"] == "freezing=head_a freezing.after_epochs=1"
    assert other["ci_low"] < 0 < other["ci_high"] and other["verdict"] == INCONCLUSIVE


def test_a_run_that_trains_nothing_is_neither_unconverged_nor_unknown() -> None:
    df = runs_frame(runs("none", test__intent__accuracy=(0.98, 0.99, 0.985))
                    + runs("all", test__intent__accuracy=(0.1, 0.09, 0.1)))
    df["converged"] = [False, False, True, None, None, None]
    df["steps"] = [40, 40, 40, 0, 0, 0]
    control = row(claims(df)["F1"], "test.intent.accuracy")
    assert control["unconverged"] == "2 of 6"
    df.loc[df["freezing"].eq("all"), "steps"] = 10  # trained, yet recorded nothing
    assert row(claims(df)["F1"], "test.intent.accuracy")["unconverged"] == "2 of 6 (3 unknown)"


def test_f1_is_measured_with_a_trained_probe_at_small_fractions() -> None:
    f1 = next(spec for spec in CLAIMS if spec.id == "F1")
    assert f1.values == ("backbone",) and f1.controls == ("all",) and f1.subset == "small"
    df = runs_frame(runs("none", test__intent__accuracy=(0.98, 0.99, 0.985))
                    + runs("all", test__intent__accuracy=(0.1, 0.09, 0.1)))
    res = claims(df)["F1"]
    assert res.verdict == MISSING and "train fractions below 1" in res.missing
    assert set(res.evidence["role"]) == {CONTROL}  # the control is shown all the same


def test_parameter_efficient_claims() -> None:
    by_id = {spec.id: spec for spec in CLAIMS}
    assert by_id["P1"].values == ("lora",) and by_id["P2"].values == ("bitfit",)
    assert "Hu et al. 2021" in by_id["P1"].literature
    assert "Ben Zaken et al. 2022" in by_id["P2"].literature
    df = runs_frame(runs("none", test__intent__accuracy=(0.98, 0.99, 0.985)))
    res = claims(df)
    assert res["P1"].verdict == MISSING and "freezing=none,lora" in res["P1"].missing
    assert "freezing=none,bitfit data.train_fraction" in res["P2"].missing
    frac = {"cfg__data__train_fraction": (0.05,) * 3}
    df = runs_frame(
        runs("none", test__intent__accuracy=(0.94, 0.95, 0.945), cost__train_memory_mb=(400, 410, 405),
             cost__params_trainable=(2.26e7,) * 3, **frac)
        + runs("lora", test__intent__accuracy=(0.941, 0.952, 0.945), cost__train_memory_mb=(250, 252, 249),
               cost__params_trainable=(3e5,) * 3, **frac)
        + runs("bitfit", test__intent__accuracy=(0.935, 0.944, 0.94), cost__params_trainable=(1e5,) * 3,
               **frac))
    res = claims(df)
    assert res["P1"].verdict == SUPPORTED
    assert row(res["P1"], "cost.params_trainable")["role"] == CONSTRUCTION
    p2 = row(res["P2"], "test.intent.accuracy")  # -0.0053 [-0.0068, -0.0039]: within 0.01
    assert p2["verdict"] == SUPPORTED and p2["minimum"] == 0.01
    assert res["P2"].verdict == SUPPORTED


def test_missing_runs_name_the_deciding_runs() -> None:
    df = runs_frame(runs("none", test__intent__accuracy=(0.98, 0.99, 0.985)))
    res = claims(df)
    assert "mtexp-train -m optim=adamw,llrd,discriminative logger=csv seed=0,1,2" in res["L3"].missing
    assert all("sweeps/README.md" in r.missing for r in res.values() if r.verdict == MISSING)


def test_seed_spread_needs_a_factor_and_variance_in_both_groups() -> None:
    flat = runs("none", optim="adamw", test__intent__accuracy=(0.95, 0.95, 0.95))
    df = runs_frame(flat + runs("none", optim="llrd", test__intent__accuracy=(0.90, 0.95, 0.85)))
    spread = row(claims(df)["L3"], "test.intent.accuracy")
    assert spread["verdict"] == NOT_MEASURABLE and "zero variance" in spread["note"]
    df = runs_frame(runs("none", optim="adamw", test__intent__accuracy=(0.90, 0.95, 0.85))
                    + runs("none", optim="llrd", test__intent__accuracy=(0.91, 0.95, 0.86)))
    spread = row(claims(df)["L3"], "test.intent.accuracy")  # a ratio near 1: no factor of 1.5
    assert spread["effect"] == pytest.approx(0.9, abs=0.1) and spread["verdict"] == INCONCLUSIVE
    assert spread["minimum"] == 1.5
