"""What a claim is made of (`Check`, `ClaimSpec`) and the evidence rows that decide it.

`evaluate_claim(spec, runs)` pairs the scenario's runs with the reference's by seed, computes one
row per check, metric and scenario variant, decides each row (`mtexp.verdicts.decide`) and folds
the voting rows into parts and the claim's verdict (`mtexp.verdicts.combine`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch

import numpy as np
import pandas as pd
from scipy import stats

from mtexp.results import (
    FRACTION,
    completed_mask,
    convergence_flags,
    convergence_unknown,
    group_columns_of,
    mean_ci,
    task_headlines,
    task_metrics,
)
from mtexp.scenarios import frozen_head
from mtexp.tasks import resolve_head
from mtexp.verdicts import (
    CLAIM,
    CONSTRUCTION,
    CONTEXT,
    CONTROL,
    MISSING,
    NOT_MEASURABLE,
    NOT_MEASURED,
    SPREAD_FACTOR,
    SPREAD_RULE,
    ZERO_VARIANCE,
    Decision,
    Estimate,
    MetricRule,
    Part,
    chance_level,
    combine,
    decide,
    part_verdicts,
    rule_for,
)

FROZEN_HEAD_KEYS = ("cfg.freezing.head",)
Note = tuple[str, str, str]  # a metric no run recorded: (part, metric, scenario label)


@dataclass(frozen=True)
class Check:
    """One measured consequence of a claim.

    `metric`: a column, `{quality}` (each task's headline test score) or `{other}` (the score of
    the task whose head is not frozen). `direction`: higher | lower | not_lower | context.
    `part`: the part of the claim it measures (default: the label). `kind`: `paired` (scenario vs
    reference by seed), `spread` (std across seeds, scenario / reference) or `within` (one-sample
    on the seeds of the reference configuration). `margin`: the non-inferiority margin of
    not_lower (default: the metric's minimum effect). `construction`: why the check holds by
    construction (shown, never votes). `requires`: what the runs must log for it.
    """

    metric: str
    direction: str
    label: str
    part: str = ""
    kind: str = "paired"
    margin: float | None = None
    construction: str = ""
    requires: str = ""

    @property
    def role(self) -> str:
        if self.construction:
            return CONSTRUCTION
        return CONTEXT if self.direction == "context" else CLAIM


@dataclass(frozen=True)
class ClaimSpec:
    """A claim, the runs that decide it and the checks to make.

    `values`: fnmatch patterns of the scenario's values of `column`; `reference`: candidate
    reference values (the first present is used); `subset`: `full` (the largest train fraction)
    or `small` (each train fraction below 1, separately); `controls`: values shown beside the
    scenario that never vote; `variant_by`: config columns that split the scenario's runs;
    `is_control`: true for a variant's runs that do not test the claim (shown as a control row).
    """

    id: str
    scenario: str
    text: str
    column: str
    values: tuple[str, ...]
    reference: tuple[str, ...]
    checks: tuple[Check, ...]
    sweep: str
    example: str
    subset: str = "full"
    variant_by: tuple[str, ...] = ()
    controls: tuple[str, ...] = ()
    is_control: Callable[[pd.DataFrame], bool] | None = None
    note: str = ""
    literature: str = ""


@dataclass
class ClaimResult:
    spec: ClaimSpec
    verdict: str
    evidence: pd.DataFrame
    missing: str = ""
    notes: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)


@dataclass(frozen=True)
class Variant:
    """One group of runs compared with the reference: its label, runs and frozen tasks."""

    label: str
    runs: pd.DataFrame
    frozen: frozenset[str]
    role: str | None = None  # CONTROL for control rows; None: each check's own role


def _key(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    return df[keys].astype(str).agg("|".join, axis=1) if len(df) else pd.Series(dtype=str)


def _config_keys(df: pd.DataFrame, column: str) -> list[str]:
    """What makes a configuration apart from the seed: the other group choices, the fraction."""
    keys = [c for c in group_columns_of(df) if c != column]
    return [*keys, FRACTION] if FRACTION in df.columns else keys


def unconverged_text(runs: pd.DataFrame) -> str:
    """How many of `runs` recorded `converged: false`; 'unknown' for runs that trained without
    the record."""
    unknown, false = int(convergence_unknown(runs).sum()), int(convergence_flags(runs).eq(False).sum())
    if unknown and unknown == len(runs):
        return "unknown"
    return f"{false} of {len(runs)}" + (f" ({unknown} unknown)" if unknown else "")


def _labels(runs: pd.DataFrame, metric: str) -> float | None:
    column = f"labels.{metric.split('.')[1]}" if metric.count(".") >= 2 else ""
    if column in runs.columns and runs[column].notna().any():
        return float(runs[column].mean())
    return None


def _at_chance(metric: str, runs: pd.DataFrame, means: tuple[float, float]) -> float | None:
    """The chance level when both means sit at or below it, else None."""
    chance = chance_level(metric, _labels(runs, metric))
    return chance if chance is not None and max(means) <= chance else None


def _row(check: Check, metric: str, variant: Variant, reference: str, kind: str, est: Estimate,
         means: tuple[float, float], used: pd.DataFrame, rule: MetricRule | None = None) -> dict:
    """One evidence row: the estimate, its minimum effect and the decision (or the role)."""
    ref_mean, treat_mean = means
    rule = rule or rule_for(metric)
    minimum = rule.minimum * abs(ref_mean) if rule.relative else rule.minimum
    role = variant.role or check.role
    decision = Decision(role, check.construction) if role != CLAIM else decide(
        est, check.direction, rule, minimum, check.margin,
        _at_chance(metric, used, means) if kind == "paired diff" else None)
    return {
        "check": check.label, "part": check.part or check.label, "metric": metric,
        "direction": check.direction, "treatment": variant.label, "reference": reference,
        "effect_kind": kind, "n": est.n, "reference_mean": ref_mean, "treatment_mean": treat_mean,
        "effect": est.effect, "ci_low": est.low, "ci_high": est.high,
        "minimum": check.margin if check.direction == "not_lower" and check.margin else minimum,
        "relative": est.effect / ref_mean if kind == "paired diff" and ref_mean > 0 else math.nan,
        "unconverged": unconverged_text(used) if len(used) else "–",
        "role": role, "verdict": decision.verdict, "note": decision.note,
    }


def _paired(check: Check, metric: str, variant: Variant, ref: pd.DataFrame, keys: list[str],
            reference: str) -> dict:
    treat_keys, ref_keys = _key(variant.runs, keys), _key(ref, keys)
    t = variant.runs.assign(_k=treat_keys).groupby("_k")[metric].mean()
    r = ref.assign(_k=ref_keys).groupby("_k")[metric].mean()
    both = pd.concat({"t": t, "r": r}, axis=1, join="inner").dropna()
    ci = mean_ci((both["t"] - both["r"]).tolist())
    est = Estimate(ci["mean"], ci["ci_low"], ci["ci_high"], len(both), ci["std"])
    used = pd.concat([variant.runs[treat_keys.isin(both.index)], ref[ref_keys.isin(both.index)]])
    return _row(check, metric, variant, reference, "paired diff", est,
                (both["r"].mean(), both["t"].mean()), used)


def _spread(check: Check, metric: str, variant: Variant, ref: pd.DataFrame, reference: str) -> dict:
    """Seed std of the scenario over the reference's, with an F-interval (on the log scale)."""
    t = variant.runs[metric].dropna().to_numpy(float)
    r = ref[metric].dropna().to_numpy(float)
    n = min(len(t), len(r))
    std = lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else math.nan  # noqa: E731
    varies = lambda x: std(x) > ZERO_VARIANCE * max(abs(float(np.mean(x))), 1e-6)  # noqa: E731
    ratio = (std(t) / std(r)) ** 2 if n >= 2 and varies(t) and varies(r) else math.nan
    if ratio > 0:
        dft, dfr = len(t) - 1, len(r) - 1
        est = Estimate(0.5 * math.log(ratio), 0.5 * math.log(ratio / stats.f.ppf(0.975, dft, dfr)),
                       0.5 * math.log(ratio / stats.f.ppf(0.025, dft, dfr)), n)
    else:
        est = Estimate(math.nan, math.nan, math.nan, n)
    row = _row(check, metric, variant, reference, "std ratio", est, (std(r), std(t)),
               pd.concat([variant.runs, ref]), SPREAD_RULE)
    if row["role"] == CLAIM and n >= 2 and not ratio > 0:
        row.update(verdict=NOT_MEASURABLE, note="zero variance in one of the two groups")
    row.update(effect=math.exp(est.effect), ci_low=math.exp(est.low), ci_high=math.exp(est.high),
               minimum=SPREAD_FACTOR, relative=math.nan)
    return row


def _within(check: Check, metric: str, runs: pd.DataFrame, label: str) -> dict:
    ci = mean_ci(runs[metric].dropna().tolist())
    est = Estimate(ci["mean"], ci["ci_low"], ci["ci_high"], ci["n"], ci["std"])
    return _row(check, metric, Variant(label, runs, frozenset()), "0", "mean (one-sample)", est,
                (0.0, ci["mean"]), runs)


def _metrics(check: Check, df: pd.DataFrame, frozen: frozenset[str]) -> list[str]:
    task_cols = task_metrics(df)
    if check.metric == "{quality}":
        return list(task_cols.values())
    if check.metric == "{other}":
        return [c for t, c in task_cols.items() if t not in frozen]
    return [check.metric]


def _frozen_tasks(value: str, named: list[str], df: pd.DataFrame) -> frozenset[str]:
    """Tasks whose head scenario `value` froze: the recorded `freezing.head`, else the scenario's
    own head; A = first sequence task, B = first token task among the runs' test columns."""
    kinds = {task: kind for task, (kind, _) in task_headlines(df).items()}
    heads = named or [frozen_head(value)]
    return frozenset(resolve_head(h, kinds) or h for h in heads if h is not None)


def _subset(df: pd.DataFrame, subset: str) -> pd.DataFrame:
    """The runs a claim reads: the largest train fraction, or every fraction below 1."""
    if FRACTION not in df.columns:
        return df.iloc[:0] if subset == "small" else df
    frac = pd.to_numeric(df[FRACTION], errors="coerce").fillna(1.0)
    return df[frac < 1] if subset == "small" else df[frac == frac.max()]


def _label(column: str, value: object, extra: dict[str, object]) -> str:
    shown = lambda c, v: f" {c[4:] if c.startswith('cfg.') else c}=" + (  # noqa: E731
        f"{v:.4g}" if isinstance(v, float) else f"{v}")
    return f"{column}={value}" + "".join(shown(c, v) for c, v in extra.items())


def variants(spec: ClaimSpec, runs: pd.DataFrame, df: pd.DataFrame, role: str | None = None,
             values: tuple[str, ...] | None = None) -> Iterator[Variant]:
    """The scenario's runs (or the controls') split by `variant_by` and, when it varies, the
    train fraction."""
    patterns = values or spec.values
    chosen = runs[[any(fnmatch(str(v), p) for p in patterns) for v in runs[spec.column]]]
    split = [c for c in spec.variant_by if c in chosen.columns]
    if FRACTION in chosen.columns and chosen[FRACTION].nunique() > 1:
        split.append(FRACTION)
    for values_, sub in chosen.groupby([spec.column, *split], dropna=False):
        extra = {c: v for c, v in zip(split, values_[1:], strict=True) if pd.notna(v)}
        named = [str(v) for c, v in extra.items() if c in FROZEN_HEAD_KEYS]
        own_role = CONTROL if role is None and spec.is_control and spec.is_control(sub) else role
        label = _label(spec.column, values_[0], extra) + (" (control)" if own_role == CONTROL else "")
        yield Variant(label, sub, _frozen_tasks(str(values_[0]), named, df), own_role)


def missing_runs_hint(spec: ClaimSpec, runs: pd.DataFrame | None = None) -> str:
    """Which runs would decide the claim, and what was found instead."""
    found = "no completed runs with that column"
    if runs is not None and spec.column in runs.columns and len(runs):
        counts = runs[spec.column].value_counts()
        found = ", ".join(f"{spec.column}={k} ({v})" for k, v in counts.items())
    where = " at train fractions below 1" if spec.subset == "small" else ""
    return (f"needs completed runs of {spec.column} in {{{', '.join(spec.values)}}} and the "
            f"reference {spec.column}={spec.reference[0]} sharing >= 2 seeds{where}; found: {found}. "
            f"Run the `{spec.sweep}` sweep (sweeps/README.md), e.g. "
            f"`mtexp-train -m {spec.example} seed=0,1,2`.")


def _compare(spec: ClaimSpec, variant: Variant, ref: pd.DataFrame, df: pd.DataFrame,
             reference: str, notes: list[Note]) -> list[dict]:
    rows, keys = [], ["seed", *_config_keys(df, spec.column)]
    for check in (c for c in spec.checks if c.kind != "within"):
        for metric in _metrics(check, df, variant.frozen):
            if metric not in variant.runs.columns or variant.runs[metric].isna().all():
                if variant.role != CONTROL:
                    notes.append(_not_recorded(check, metric, variant.label))
            elif check.kind == "spread":
                rows.append(_spread(check, metric, variant, ref, reference))
            else:
                rows.append(_paired(check, metric, variant, ref, keys, reference))
    return rows


def _not_recorded(check: Check, metric: str, label: str) -> Note:
    return (check.part or check.label, metric, label)


def _note_lines(notes: list[Note], spec: ClaimSpec) -> list[str]:
    """'<metric> not recorded for <labels>' (or 'not measured ...: <what it needs>')."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for part, metric, label in notes:
        grouped.setdefault((part, metric), []).append(label)
    needs = {c.metric: c.requires for c in spec.checks if c.requires}
    return [f"{metric} not measured for {', '.join(dict.fromkeys(labels))}: {needs[metric]}"
            if metric in needs else f"{metric} not recorded for {', '.join(dict.fromkeys(labels))}"
            for (_, metric), labels in grouped.items()]


def _unmeasured_parts(spec: ClaimSpec, parts: list[Part], notes: list[Note]) -> list[Part]:
    """Parts with voting checks whose metrics no run recorded: shown, never voting."""
    shown = {p.name for p in parts}
    missing = dict.fromkeys(part for part, _, _ in notes if part not in shown)
    votes = {c.part or c.label: c for c in spec.checks if c.role == CLAIM}
    return [Part(name, NOT_MEASURED, votes[name].requires) for name in missing if name in votes]


def _within_rows(spec: ClaimSpec, ref: pd.DataFrame, treat: pd.DataFrame, df: pd.DataFrame,
                 ref_value: str, notes: list[Note]) -> list[dict]:
    """One-sample checks on the seeds of each reference configuration the scenario runs share."""
    keys = _config_keys(df, spec.column)
    varying = [c for c in keys if c in df.columns and df[c].nunique(dropna=False) > 1]
    shared = set(_key(treat, keys))
    rows = []
    for config, runs in ref.groupby(_key(ref, keys)) if len(ref) else []:
        if config not in shared:
            continue
        extra = {c: runs[c].iloc[0] for c in varying}
        label = f"{_label(spec.column, ref_value, extra)} runs"
        for check in (c for c in spec.checks if c.kind == "within"):
            if check.metric in runs.columns and runs[check.metric].notna().any():
                rows.append(_within(check, check.metric, runs, label))
            else:
                notes.append(_not_recorded(check, check.metric, label))
    return rows


def evaluate_claim(spec: ClaimSpec, df: pd.DataFrame) -> ClaimResult:
    """Evidence rows, parts and verdict for one claim on the runs of `df` (after `add_derived`)."""
    done = df[completed_mask(df)] if spec.column in df.columns else None
    if done is None or not len(done):
        return ClaimResult(spec, MISSING, pd.DataFrame(), missing_runs_hint(spec, done))
    present = set(done[spec.column].dropna())
    ref_value = next((r for r in spec.reference if r in present), spec.reference[0])
    runs = _subset(done, spec.subset)
    ref = runs[runs[spec.column] == ref_value]
    reference, rows, notes = f"{spec.column}={ref_value}", [], []
    found = list(variants(spec, runs, df)) if len(ref) else []
    for variant in found:
        rows += _compare(spec, variant, ref, df, reference, notes)
    everything = done[done[spec.column] == ref_value]
    if spec.controls and len(everything):
        for control in variants(spec, done, df, CONTROL, spec.controls):
            rows += _compare(spec, control, everything, df, reference, notes)
    if found:
        treat = pd.concat([v.runs for v in found])
        rows += _within_rows(spec, ref, treat, df, ref_value, notes)
    evidence = pd.DataFrame(rows)
    parts = part_verdicts(evidence)
    parts += _unmeasured_parts(spec, parts, notes) if found else []
    verdict = combine(p.verdict for p in parts) if found else MISSING
    missing = missing_runs_hint(spec, done) if verdict == MISSING else ""
    if missing and found and all(v.role == CONTROL for v in found):
        missing += f" The runs of {', '.join(v.label for v in found)} are controls (see the note)."
    return ClaimResult(spec, verdict, evidence, missing, _note_lines(notes, spec), parts)
