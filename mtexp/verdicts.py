"""The verdict rule: per-metric minimum effects and chance levels, one check's verdict from its
interval, and a claim's verdict from its parts.

`METRIC_RULES` is the one table of minimum effects and chance levels (claims.md prints it);
`decide` turns an effect with its 95% interval into a verdict; `combine` folds verdicts (of a
part's checks, or of a claim's parts) into one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatch

import pandas as pd

from mtexp.formatting import fmt

SUPPORTED, CONTRADICTED, INCONCLUSIVE, MIXED = "supported", "contradicted", "inconclusive", "mixed"
NOT_MEASURABLE = "not measurable"
MISSING = "inconclusive (missing runs)"
UNMEASURED = "inconclusive (not measured)"
NOT_MEASURED = "not measured"  # a part whose metric the runs did not record
TOO_FEW = f"{INCONCLUSIVE} (n < 2)"
CLAIM = "claim"  # the role of a check that votes
CONTEXT, CONSTRUCTION, CONTROL = "context", "by construction", "control"
# Verdicts that vote; every other one (not measurable, missing, the non-voting roles) is shown only.
VOTES = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, MIXED, TOO_FEW)
SPREAD_FACTOR = 1.5  # seed spread: a std ratio beyond 1.5x (or below 1/1.5) counts
CHANCE_FLOOR = 0.05  # chance level of F1-type scores, and of accuracy when the label count is unknown
ZERO_VARIANCE = 1e-9  # paired differences whose std is below this share of their mean are all equal


@dataclass(frozen=True)
class MetricRule:
    """How one family of metric columns is judged.

    `minimum`: the smallest effect that counts (a fraction of the reference mean when
    `relative`). `chance`: "uniform" (1/K over the task's K labels), a floor, or None (no chance
    level). `integer`: an integer count, which votes only with a non-degenerate interval.
    `exact`: an accounting quantity without seed noise, whose zero-variance effect is exact.
    """

    pattern: str
    minimum: float
    shown: str
    relative: bool = False
    chance: str | float | None = None
    integer: bool = False
    exact: bool = False


METRIC_RULES: tuple[MetricRule, ...] = (
    MetricRule("test.*.accuracy", 0.005, "0.5 points (0.005)", chance="uniform"),
    MetricRule("test.*", 0.005, "0.5 points (0.005)", chance=CHANCE_FLOOR),
    MetricRule("cost.params_*", 0.05, "5% of the reference", relative=True, exact=True),
    MetricRule("cost.train_memory_mb", 0.05, "5% of the reference", relative=True, exact=True),
    MetricRule("cost.*", 0.05, "5% of the reference", relative=True),
    MetricRule("drift.*", 0.01, "0.01"),
    MetricRule("convergence.epochs_to_95pct", 1, "1 epoch", integer=True),
    MetricRule("convergence.best_epoch", 1, "1 epoch", integer=True),
    MetricRule("convergence.*", 0.005, "0.005"),
    MetricRule("stability.loss_spikes", 1, "1 spike", integer=True),
    MetricRule("*", 0.005, "0.005"),
)
SPREAD_RULE = MetricRule("seed std ratio", math.log(SPREAD_FACTOR), f"a factor {SPREAD_FACTOR}")


def rule_for(metric: str) -> MetricRule:
    """The first rule of `METRIC_RULES` whose pattern matches `metric`."""
    return next(rule for rule in METRIC_RULES if fnmatch(metric, rule.pattern))


def chance_level(metric: str, labels: float | None = None) -> float | None:
    """The score a model reaches by guessing: 1/K for accuracy over K labels (the floor when K is
    unknown), the floor for other test scores, None for metrics that are not scores."""
    chance = rule_for(metric).chance
    if chance == "uniform":
        return 1.0 / labels if labels and labels > 0 else CHANCE_FLOOR
    return chance if isinstance(chance, float) else None


def chance_text(rule: MetricRule) -> str:
    if rule.chance == "uniform":
        return f"1/K for K labels (labels.json); {CHANCE_FLOOR} when K is unknown"
    return "–" if rule.chance is None else f"{rule.chance}"


def rules_table() -> tuple[list[str], list[list[str]]]:
    """The minimum effects and chance levels, as a table for claims.md and report.html."""
    notes = lambda r: ("integer count" if r.integer else  # noqa: E731
                       "accounting: a zero-variance effect is exact" if r.exact else "")
    rows = [[r.pattern, r.shown, chance_text(r), notes(r)] for r in METRIC_RULES]
    rows.append(["seed spread (std ratio)", SPREAD_RULE.shown, "–", "F-interval for the ratio"])
    return ["metric", "minimum effect", "chance level", "note"], rows


@dataclass(frozen=True)
class Estimate:
    """An effect (scenario - reference, a one-sample mean, or a log std ratio) with its 95%
    interval over `n` pairs or runs, and the std of what was averaged (0: a degenerate interval)."""

    effect: float
    low: float
    high: float
    n: int
    spread: float = math.nan

    @property
    def degenerate(self) -> bool:
        """Every pair differs by the same amount (up to rounding): no interval to speak of."""
        return self.n >= 2 and self.spread <= ZERO_VARIANCE * max(abs(self.effect), 1e-6)


@dataclass(frozen=True)
class Decision:
    verdict: str
    note: str = ""


def decide(est: Estimate, direction: str, rule: MetricRule, minimum: float,
           margin: float | None = None, at_chance: float | None = None) -> Decision:
    """One check's verdict (see `RULE`). `direction`: higher | lower | not_lower; `minimum`: the
    rule's minimum effect in the metric's units; `margin`: the non-inferiority margin of
    not_lower (default `minimum`); `at_chance`: the chance level when both means sit at or
    below it."""
    if est.n == 0:
        return Decision(MISSING)
    if at_chance is not None:
        return Decision(NOT_MEASURABLE, f"both means at or below chance ({at_chance:.3g})")
    if est.n < 2:
        return Decision(TOO_FEW)
    low, high, note = est.low, est.high, "integer count" if rule.integer else ""
    if est.degenerate:
        if not rule.exact:
            return Decision(NOT_MEASURABLE, "zero variance: every pair differs by the same amount")
        low = high = est.effect
        note = "exact (no seed noise)"
    if math.isnan(low) or math.isnan(high):
        return Decision(INCONCLUSIVE, note)
    sign = -1.0 if direction == "lower" else 1.0
    low, high = sorted((sign * low, sign * high))
    if direction == "not_lower":
        bound = minimum if margin is None else margin
        support, contradict = low > -bound, high < -bound
    else:
        support, contradict = low > minimum, high < -minimum
    verdict = SUPPORTED if support else CONTRADICTED if contradict else INCONCLUSIVE
    return Decision(verdict, note)


def combine(verdicts: Iterable[str]) -> str:
    """One verdict from several (a part's checks, or a claim's parts): supported when every vote
    is, mixed when some are supported and some contradicted, contradicted when at least one is and
    none supported, inconclusive otherwise; not measurable or missing when nothing votes."""
    verdicts = list(verdicts)
    votes = [v for v in verdicts if v in VOTES]
    if not votes:
        return NOT_MEASURABLE if NOT_MEASURABLE in verdicts else MISSING
    supported = any(v in (SUPPORTED, MIXED) for v in votes)
    contradicted = any(v in (CONTRADICTED, MIXED) for v in votes)
    if all(v == SUPPORTED for v in votes):
        return SUPPORTED
    if supported and contradicted:
        return MIXED
    return CONTRADICTED if contradicted else INCONCLUSIVE


@dataclass(frozen=True)
class Part:
    """One part of a claim (speed, memory, quality, ...): its verdict and the evidence behind it."""

    name: str
    verdict: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.verdict}" + (f", {self.detail}" if self.detail else "")


def _oriented(row: pd.Series) -> float:
    return -row["effect"] if row["direction"] == "lower" else row["effect"]


SHORT_NAMES = {
    "cost.seconds_per_epoch": "s/epoch", "cost.train_memory_mb": "training memory (MB)",
    "cost.params_trainable": "trainable parameters", "drift.cka.mean": "CKA",
    "drift.cka.top_minus_bottom": "CKA top - bottom", "drift.sts_spearman_change": "STS change",
    "convergence.overfit_gap": "overfit gap", "convergence.first_epoch_share": "first-epoch share",
    "convergence.epochs_to_95pct": "epochs to 95%", "stability.loss_spikes": "loss spikes",
}


def short_metric(metric: str) -> str:
    """`slots F1` for test.slots.f1, `intent accuracy`, `s/epoch`, ...; else the column."""
    parts = metric.split(".")
    names = {"f1": "F1", "macro_f1": "macro-F1", "accuracy": "accuracy"}
    if len(parts) == 3 and parts[0] == "test" and parts[2] in names:
        return f"{parts[1]} {names[parts[2]]}"
    return SHORT_NAMES.get(metric, metric)


def _cite(row: pd.Series, several: bool) -> str:
    interval = f"{fmt(row['effect'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
    what = short_metric(row["metric"])
    text = f"seed std ratio of {what} {interval}" if row["effect_kind"] == "std ratio" \
        else f"{what} {interval}"
    if rule_for(row["metric"]).relative and pd.notna(row["relative"]):
        text += f" ({100 * row['relative']:+.0f}%)"
    return f"{text} at {row['treatment']}" if several else text


def part_verdicts(evidence: pd.DataFrame) -> list[Part]:
    """Each part's verdict from its voting rows, with the row that decides it: the worst
    contradicted one, else the weakest supported one, else the first inconclusive one."""
    if evidence.empty:
        return []
    rows = evidence[evidence["role"] == CLAIM]
    parts = []
    for name in dict.fromkeys(rows["part"]):
        sub = rows[rows["part"] == name]
        verdict = combine(sub["verdict"])
        several = sub["treatment"].nunique() > 1
        order = sub.assign(_o=sub.apply(_oriented, axis=1)).sort_values("_o", kind="stable")
        cited = [order[order["verdict"] == v] for v in (CONTRADICTED, SUPPORTED)]
        if verdict == MIXED:
            detail = " / ".join(_cite(c.iloc[0], several) for c in reversed(cited))
        elif verdict in (CONTRADICTED, SUPPORTED):
            detail = _cite(cited[verdict == SUPPORTED].iloc[0], several)
        elif verdict == NOT_MEASURABLE:
            detail = "; ".join(dict.fromkeys(n for n in sub["note"] if n))
        else:
            pick = sub[sub["verdict"].str.startswith(INCONCLUSIVE)]
            detail = _cite(pick.iloc[0], several) if len(pick) else ""
        parts.append(Part(name, verdict, detail))
    return parts


RULE_POINTS: tuple[str, ...] = (
    "Runs are paired by seed (and by every other group choice and the train fraction) between the "
    "scenario and its reference; the effect is the mean paired difference (scenario - reference) "
    "with a 95% t-interval over the pairs.",
    "Each metric has a minimum effect (table below). A check is **supported** when the whole "
    "interval lies beyond the minimum effect on the claimed side, **contradicted** when it lies "
    "beyond the minimum effect on the other side, and **inconclusive** otherwise or with fewer "
    "than 2 pairs. A 'not lower' check (non-inferiority) is supported when the interval lies above "
    "-margin and contradicted when it lies below it; the margin is the minimum effect unless the "
    "check states another.",
    "A quality check where both means sit at or below chance (table below) is **not measurable**: "
    "it never supports or contradicts.",
    "Paired differences with zero variance (all equal up to rounding) give no interval: they are "
    "**not measurable** and do not vote, except for accounting quantities without seed noise "
    "(trainable parameters, deterministic training memory), whose effect is then exact and is "
    "compared with the minimum effect directly. Integer counts (epochs to 95% of the best dev "
    "score, loss spikes) vote only with a non-degenerate interval, noted 'integer count'.",
    f"Seed spread compares standard deviations with an F-interval for their ratio: supported when "
    f"it lies below 1/{SPREAD_FACTOR}, contradicted when it lies above {SPREAD_FACTOR}. Loss "
    "spikes are counted on per-step losses (steps.csv, written with logger=csv): a logged step "
    "whose summed task loss exceeds twice the median of the 10 logged steps before it, or is not "
    "finite; without steps.csv they are not measured. A one-sample ('within') check tests the "
    "seeds of one reference configuration (the same group values apart from the seed as the "
    "scenario runs it is compared with) against 0.",
    "Checks true by construction (e.g. the time of a scenario that trains nothing, the CKA of a "
    "frozen encoder), context rows and control rows are shown and never vote.",
    "A claim's checks form parts (speed, memory, quality, ...). A part is **supported** when all "
    "its voting checks are, **mixed** when some are supported and some contradicted, "
    "**contradicted** when at least one is and none is supported, **inconclusive** otherwise. "
    "The claim's verdict follows from its parts' verdicts by the same rule (supported only when "
    "every voting part is supported); **not measurable** when no check could vote.",
    "Runs whose metrics.json records `converged: false` are counted in the evidence "
    "('unconverged') and do not change a verdict; runs that predate the record show 'unknown'. "
    "Memory is `cost.train_memory_mb` (the memory training adds), never the process peak.",
)
RULE = " ".join(RULE_POINTS)
