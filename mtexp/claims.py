"""The Task 3/4 claims (../shared/CLAIMS.md) put to the test: paired differences over seeds, a verdict.

`CLAIMS` maps each claim to the runs that decide it (group column, treatment values, reference)
and the checks to make; adjust it there. `evaluate_claims(runs, histories)` does the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fnmatch import fnmatch

import numpy as np
import pandas as pd
from scipy import stats

from mtexp.results import (
    FRACTION,
    add_derived,
    completed_mask,
    group_columns_of,
    mean_ci,
    task_headlines,
    task_metrics,
)
from mtexp.scenarios import GROUP, FrozenHead, Gradual, frozen_head, scenario_names
from mtexp.tasks import resolve_head

FROZEN_HEAD_KEYS = ("cfg.freezing.head",)
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
MISSING = "inconclusive (missing runs)"
UNMEASURED = "inconclusive (not measured)"

RULE = (
    "Runs are paired by seed (and by every other group choice and the train fraction) between the "
    "scenario and its reference; the effect is the mean paired difference (scenario - reference) "
    "with a 95% t-interval over the pairs. A check is **supported** when that interval lies entirely "
    "on the claimed side (for 'not lower': above -margin), **contradicted** when it lies entirely on "
    "the other side or the mean difference is on the wrong side by more than the stated margin, and "
    "**inconclusive** otherwise or with fewer than 2 pairs. Seed spread (L3) compares standard "
    "deviations with an F-interval for the variance ratio (margin: 1.5x). A claim is supported when "
    "all its measured checks are, contradicted when at least one is and none is supported, and "
    "inconclusive otherwise (mixed or undecided). Context rows are shown but do not vote."
)


@dataclass(frozen=True)
class Check:
    """One measured consequence of a claim.

    `metric` is a column, `{quality}` (each task's headline test score) or `{other}` (the score of
    the task whose head is not frozen). `kind`: `paired` (scenario vs reference by seed), `spread`
    (std across seeds, scenario / reference) or `within` (one-sample on the reference runs).
    """

    metric: str
    direction: str  # higher | lower | not_lower | context
    label: str
    margin: float = 0.005
    relative: bool = False  # margin as a fraction of the reference mean
    kind: str = "paired"


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    scenario: str
    text: str
    column: str
    values: tuple[str, ...]  # fnmatch patterns of the scenario's group values
    reference: tuple[str, ...]  # candidate reference values; the first one present is used
    checks: tuple[Check, ...]
    sweep: str  # the sweep preset (sweeps/) that decides it
    example: str  # overrides that produce the deciding runs
    subset: str = "full"  # full: largest train fraction; smallest: smallest one (< 1)
    variant_by: tuple[str, ...] = ()
    note: str = ""
    literature: str = ""


QUALITY_CTX = Check("{quality}", "context", "quality (test)")
# Memory added by training (CPU RSS counts the loaded process too); peak memory when absent.
MEMORY = Check("cost.train_memory_mb|cost.peak_memory_mb", "lower", "less memory", 0.05, True)
# The scenarios each freezing claim is about, and the reference they are compared with.
REFERENCE = scenario_names(lambda s: s.reference)
NOTHING_TRAINS = scenario_names(lambda s: not s.anything_trains)
FROZEN_ENCODER = scenario_names(lambda s: s.anything_trains and not s.encoder_trains)
FROZEN_HEADS = scenario_names(lambda s: issubclass(s, FrozenHead))
GRADUAL = scenario_names(lambda s: issubclass(s, Gradual))
UNIFORM = ("adamw", "uniform")
LAYERWISE = ("llrd*", "discriminative*")
DECAY = ("cfg.optim.layer_decay", "cfg.optim.decay")

CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec(
        "F1", "whole network frozen (freezing=all)",
        "Nothing is updated, so the model is a fixed feature extractor: training is fastest and "
        "lightest, overfitting is least likely, which suits small labelled sets.",
        GROUP, NOTHING_TRAINS, REFERENCE,
        (Check("cost.seconds_per_epoch", "lower", "faster epochs", 0.05, True),
         MEMORY,
         QUALITY_CTX, Check("convergence.overfit_gap", "context", "overfit gap")),
        "freezing", "freezing=none,all",
        note="Here freezing=all trains nothing, heads included: its scores are the untrained "
        "control (random heads), not a trained classifier on frozen features (that is F2). The "
        "verdict covers speed and memory; 'suits small labelled sets' cannot hold for a model "
        "that learns nothing.",
        literature="BERT (Devlin et al. 2019, Table 7): frozen features into a trained BiLSTM "
        "reach 91.0-96.1 CoNLL-2003 dev F1 against 96.4 for fine-tuning.",
    ),
    ClaimSpec(
        "F2", "backbone frozen, heads trained (freezing=backbone)",
        "The heads adapt to each task while the pre-trained encoder is kept; training is faster "
        "and lighter than full fine-tuning.",
        GROUP, FROZEN_ENCODER, REFERENCE,
        (Check("cost.seconds_per_epoch", "lower", "faster epochs", 0.05, True),
         MEMORY,
         Check("cost.params_trainable", "lower", "fewer trainable parameters", 0.01, True),
         Check("{quality}", "context", "quality cost (test)")),
        "freezing", "freezing=none,backbone",
        literature="Sun et al. 2019 (IMDb, BERT-base): frozen features 6.79% test error against "
        "5.40% fine-tuned; Lee et al. 2019: tuning only the top quarter keeps ~90% of quality.",
    ),
    ClaimSpec(
        "F3", "backbone frozen (freezing=backbone)",
        "Freezing the encoder avoids catastrophic forgetting of the pre-trained representation.",
        GROUP, FROZEN_ENCODER, REFERENCE,
        (Check("drift.cka.mean", "higher", "encoder unchanged (CKA to pre-trained)", 0.01),
         Check("drift.sts_spearman_change", "higher", "STS Spearman kept (after - before)")),
        "freezing", "freezing=none,backbone",
        note="A frozen encoder has CKA 1 and no STS change by construction; the effect measures "
        "how much full fine-tuning moves (and degrades) the pre-trained representation.",
        literature="Merchant et al. 2020: fine-tuning changes mostly the top layers; CKA "
        "(Kornblith et al. 2019) measures that change per layer, stably across seeds.",
    ),
    ClaimSpec(
        "F4", "backbone frozen, little labelled data",
        "With limited labelled data, freezing the encoder overfits less than full fine-tuning.",
        GROUP, FROZEN_ENCODER, REFERENCE,
        (Check("convergence.overfit_gap", "lower", "smaller train-dev gap"),
         Check("{quality}", "higher", "better test score")),
        "learning_curve", "freezing=none,backbone data.train_fraction=0.01,0.05,0.2,1.0",
        subset="smallest",
        note="Measured at the smallest data.train_fraction of the sweep.",
        literature="ULMFiT (Howard & Ruder 2018) trained the last layer only and got much worse "
        "error (TREC-6 16.09 vs 5.69), on full data.",
    ),
    ClaimSpec(
        "F5", "one task head frozen (freezing=head_a / head_b / one_head)",
        "Freezing one head focuses training on the other task, which then does better.",
        GROUP, FROZEN_HEADS, REFERENCE,
        (Check("{other}", "higher", "other task's test score"),),
        "freezing", "freezing=none,head_a,head_b", variant_by=FROZEN_HEAD_KEYS,
    ),
    ClaimSpec(
        "F6", "gradual unfreezing, top layers first (freezing=gradual)",
        "Unfreezing from the top down adapts to the tasks while preventing catastrophic "
        "forgetting; the top layers carry the most task-specific change.",
        GROUP, GRADUAL, REFERENCE,
        (Check("drift.cka.mean", "higher", "less encoder drift (CKA)", 0.01),
         Check("drift.sts_spearman_change", "higher", "STS Spearman kept (after - before)"),
         Check("{quality}", "not_lower", "test score not lower (margin 0.005)"),
         Check("drift.cka.top_minus_bottom", "lower", "top layer changes more than the "
               "bottom one under full fine-tuning (CKA top - bottom < 0)", 0.01, kind="within")),
        "freezing", "freezing=none,gradual",
        literature="ULMFiT Tables 6-7 (LSTM): gradual unfreezing + discriminative LR + slanted "
        "triangular LR gave TREC-6 5.69 vs 6.86 error; on transformers Wolf (transformers#674) "
        "found no gain over plain fine-tuning.",
    ),
    ClaimSpec(
        "L1", "lower LR for the encoder than for the heads (optim=split)",
        "Heads need more adaptation than the pre-trained encoder, so they get a larger LR; "
        "small encoder steps avoid damaging pre-trained weights.",
        "optim", ("split*", "head_encoder*"), UNIFORM,
        (Check("{quality}", "higher", "better test score"),
         Check("drift.cka.mean", "higher", "less encoder drift (CKA)", 0.01)),
        "lr", "optim=adamw,split",
    ),
    ClaimSpec(
        "L2", "layer-wise learning rates (optim=llrd / discriminative)",
        "Layer-wise learning rates converge faster.",
        "optim", LAYERWISE, UNIFORM,
        (Check("convergence.epochs_to_95pct", "lower", "fewer epochs to 95% of best dev", 0.5),
         Check("convergence.best_epoch", "context", "best epoch")),
        "lr", "optim=adamw,llrd,discriminative", variant_by=DECAY,
    ),
    ClaimSpec(
        "L3", "layer-wise learning rates (optim=llrd / discriminative)",
        "Layer-wise learning rates optimise more stably: no exploding or vanishing behaviour, "
        "less variation across seeds.",
        "optim", LAYERWISE, UNIFORM,
        (Check("{quality}", "lower", "seed std of test score (ratio)", 0.5, kind="spread"),
         Check("stability.loss_spikes", "lower", "train-loss spikes (>10% rise)", 0.5)),
        "lr", "optim=adamw,llrd,discriminative", variant_by=DECAY,
    ),
    ClaimSpec(
        "L4", "layer-wise learning rates (optim=llrd / discriminative)",
        "Layer-wise learning rates generalise better (higher dev/test scores).",
        "optim", LAYERWISE, UNIFORM,
        (Check("{quality}", "higher", "better test score"),),
        "lr", "optim=adamw,llrd,discriminative", variant_by=DECAY,
        literature="Sun et al. 2019 (IMDb): decay 0.95 moved test error 5.42 -> 5.40; effects on "
        "transformers are expected to be small, so seeds and CIs matter.",
    ),
    ClaimSpec(
        "L5", "per-task head learning rates (optim=per_task_heads)",
        "Each head learning at its own pace improves the individual tasks.",
        "optim", ("per_task*",), UNIFORM,
        (Check("{quality}", "higher", "better test score per task"),),
        "lr", "optim=adamw,per_task_heads",
    ),
)


@dataclass
class ClaimResult:
    spec: ClaimSpec
    verdict: str
    evidence: pd.DataFrame
    missing: str = ""
    notes: list[str] = field(default_factory=list)


def _verdict(effect: float, low: float, high: float, n: int, direction: str, margin: float,
             threshold: float | None = None) -> str:
    if direction == "context":
        return "context"
    if n < 2:
        return f"{INCONCLUSIVE} (n < 2)" if n else MISSING
    if math.isnan(low):
        return INCONCLUSIVE
    sign = -1.0 if direction == "lower" else 1.0
    effect, low, high = sign * effect, *sorted((sign * low, sign * high))
    if threshold is None:
        threshold = -margin if direction.startswith("not_") else 0.0
    if low > threshold:
        return SUPPORTED
    if high < threshold or effect < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def _pair_keys(df: pd.DataFrame, column: str) -> list[str]:
    keys = ["seed", *(c for c in group_columns_of(df) if c != column)]
    return [*keys, FRACTION] if FRACTION in df.columns else keys


def _key(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    return df[keys].astype(str).agg("|".join, axis=1) if len(df) else pd.Series(dtype=str)


def _row(check: Check, metric: str, variant: str, reference: str, kind: str, n: int,
         ref_mean: float, treat_mean: float, ci: dict[str, float], margin: float,
         threshold: float | None = None) -> dict:
    effect = ci["mean"]
    return {
        "check": check.label, "metric": metric, "treatment": variant, "reference": reference,
        "effect_kind": kind, "n": n, "reference_mean": ref_mean, "treatment_mean": treat_mean,
        "effect": effect, "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
        "relative": effect / ref_mean if kind == "paired diff" and ref_mean > 0 else math.nan,
        "role": "context" if check.direction == "context" else "claim",
        "verdict": _verdict(effect, ci["ci_low"], ci["ci_high"], n, check.direction, margin,
                            threshold),
    }


def _paired(check: Check, metric: str, treat: pd.DataFrame, ref: pd.DataFrame, keys: list[str],
            variant: str, reference: str) -> dict:
    t = treat.assign(_k=_key(treat, keys)).groupby("_k")[metric].mean()
    r = ref.assign(_k=_key(ref, keys)).groupby("_k")[metric].mean()
    both = pd.concat({"t": t, "r": r}, axis=1, join="inner").dropna()
    ci = mean_ci((both["t"] - both["r"]).tolist())
    margin = check.margin * abs(both["r"].mean()) if check.relative and len(both) else check.margin
    return _row(check, metric, variant, reference, "paired diff", len(both), both["r"].mean(),
                both["t"].mean(), ci, margin)


def _spread(check: Check, metric: str, treat: pd.DataFrame, ref: pd.DataFrame,
            variant: str, reference: str) -> dict:
    t, r = treat[metric].dropna().to_numpy(float), ref[metric].dropna().to_numpy(float)
    n = min(len(t), len(r))
    ci = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if n >= 2 and r.std(ddof=1) > 0:
        ratio = t.var(ddof=1) / r.var(ddof=1)
        dft, dfr = len(t) - 1, len(r) - 1
        ci = {"mean": math.sqrt(ratio),
              "ci_low": math.sqrt(ratio / stats.f.ppf(0.975, dft, dfr)),
              "ci_high": math.sqrt(ratio / stats.f.ppf(0.025, dft, dfr))}
    row = _row(check, metric, variant, reference, "std ratio", n, float(np.std(r, ddof=1))
               if len(r) > 1 else math.nan, float(np.std(t, ddof=1)) if len(t) > 1 else math.nan,
               {k: v - 1 for k, v in ci.items()}, check.margin, threshold=0.0)
    row.update(effect=ci["mean"], ci_low=ci["ci_low"], ci_high=ci["ci_high"])
    return row


def _within(check: Check, metric: str, ref: pd.DataFrame, reference: str) -> dict:
    ci = mean_ci(ref[metric].dropna().tolist())
    return _row(check, metric, f"{reference} runs", "0", "mean (one-sample)", ci["n"],
                0.0, ci["mean"], ci, check.margin)


def _metrics(check: Check, df: pd.DataFrame, frozen: set[str]) -> list[str]:
    task_cols = task_metrics(df)
    if check.metric == "{quality}":
        return list(task_cols.values())
    if check.metric == "{other}":
        return [c for t, c in task_cols.items() if t not in frozen]
    present = [m for m in check.metric.split("|") if m in df.columns and df[m].notna().any()]
    return present[:1] or [check.metric.split("|")[0]]


def _frozen_tasks(value: str, extra: dict[str, object], df: pd.DataFrame) -> set[str]:
    """Tasks whose head scenario `value` froze: the recorded `freezing.head`, else the scenario's
    own head; A = first sequence task, B = first token task among the runs' test columns."""
    kinds = {task: kind for task, (kind, _) in task_headlines(df).items()}
    named = [str(v) for v in extra.values()] or [frozen_head(value)]
    return {resolve_head(head, kinds) or head for head in named if head is not None}


def _subset(df: pd.DataFrame, subset: str) -> pd.DataFrame | None:
    if FRACTION not in df.columns:
        return None if subset == "smallest" else df
    frac = pd.to_numeric(df[FRACTION], errors="coerce").fillna(1.0)
    if subset == "smallest":
        return df[frac == frac.min()] if len(df) and frac.min() < 1 else None
    return df[frac == frac.max()]


def missing_runs_hint(spec: ClaimSpec, runs: pd.DataFrame | None = None) -> str:
    """Which runs would decide the claim, and what was found instead."""
    found = "no completed runs with that column"
    if runs is not None and spec.column in runs.columns and len(runs):
        counts = runs[spec.column].value_counts()
        found = ", ".join(f"{spec.column}={k} ({v})" for k, v in counts.items())
    where = " at a train fraction below 1" if spec.subset == "smallest" else ""
    return (f"needs completed runs of {spec.column} in {{{', '.join(spec.values)}}} and the "
            f"reference {spec.column}={spec.reference[0]} sharing >= 2 seeds{where}; found: {found}. "
            f"Run the `{spec.sweep}` sweep (sweeps/README.md), e.g. "
            f"`mtexp-train -m {spec.example} seed=0,1,2`.")


def evaluate_claim(spec: ClaimSpec, df: pd.DataFrame) -> ClaimResult:
    """Evidence rows and verdict for one claim on completed runs (after `add_derived`)."""
    runs = _subset(df[completed_mask(df)], spec.subset) if spec.column in df.columns else None
    if runs is None:
        return ClaimResult(spec, MISSING, pd.DataFrame(), missing_runs_hint(spec, runs))
    present = set(runs[spec.column].dropna())
    ref_value = next((r for r in spec.reference if r in present), None)
    ref = runs[runs[spec.column] == ref_value]
    is_treat = [any(fnmatch(str(v), p) for p in spec.values) for v in runs[spec.column]]
    treat = runs[np.asarray(is_treat, dtype=bool)]
    reference, keys = f"{spec.column}={ref_value}", _pair_keys(df, spec.column)
    rows, notes = [], []
    variant_cols = [c for c in spec.variant_by if c in treat.columns]
    if ref_value is not None:
        for check in (c for c in spec.checks if c.kind == "within"):
            rows += [_within(check, m, ref, reference) for m in _metrics(check, df, set())
                     if m in ref.columns]
    variants = treat.groupby([spec.column, *variant_cols], dropna=False) if len(ref) else []
    for values, sub in variants:
        values = values if isinstance(values, tuple) else (values,)
        extra = {c: v for c, v in zip(variant_cols, values[1:], strict=True) if pd.notna(v)}
        label = f"{spec.column}={values[0]}" + "".join(
            f" {c[4:]}={v:.4g}" if isinstance(v, float) else f" {c[4:]}={v}" for c, v in extra.items())
        frozen = _frozen_tasks(str(values[0]), extra, df)
        for check in (c for c in spec.checks if c.kind != "within"):
            for metric in _metrics(check, df, frozen):
                if metric not in sub.columns or sub[metric].isna().all():
                    notes.append(f"{metric} not recorded for {label}")
                    continue
                if check.kind == "spread":
                    rows.append(_spread(check, metric, sub, ref, label, reference))
                else:
                    rows.append(_paired(check, metric, sub, ref, keys, label, reference))
    evidence = pd.DataFrame(rows)
    verdict = combine(evidence) if len(treat) and len(ref) else MISSING
    missing = missing_runs_hint(spec, runs) if verdict == MISSING else ""
    return ClaimResult(spec, verdict, evidence, missing, notes)


def combine(evidence: pd.DataFrame) -> str:
    """Claim verdict from its check verdicts (see RULE)."""
    if evidence.empty:
        return MISSING
    votes = evidence.loc[evidence["role"] == "claim", "verdict"].tolist()
    if not votes:
        return UNMEASURED
    if all(v == MISSING for v in votes):
        return MISSING
    if all(v == SUPPORTED for v in votes):
        return SUPPORTED
    if CONTRADICTED in votes and SUPPORTED not in votes:
        return CONTRADICTED
    return INCONCLUSIVE


def evaluate_claims(runs: pd.DataFrame, histories: pd.DataFrame | None = None,
                    claims: tuple[ClaimSpec, ...] = CLAIMS) -> list[ClaimResult]:
    """Every claim of `claims` against a `load_runs` frame (and `load_histories`, for L3)."""
    df = add_derived(runs, histories)
    return [evaluate_claim(spec, df) for spec in claims]


def claims_overview(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per claim: id, scenario, verdict, number of deciding checks by verdict."""
    rows = []
    for res in results:
        votes = res.evidence["verdict"][res.evidence["role"] == "claim"] if len(res.evidence) \
            else pd.Series(dtype=str)
        basis = ", ".join(f"{k}: {v}" for k, v in votes.value_counts().items())
        rows.append({"id": res.spec.id, "scenario": res.spec.scenario, "verdict": res.verdict,
                     "checks": basis or "-"})
    return pd.DataFrame(rows)
