"""The Task 3/4 claims (../shared/CLAIMS.md) and two parameter-efficient ones, put to the test.

`CLAIMS` maps each claim to the runs that decide it (group column, scenario values, reference)
and the checks to make; adjust it there. `evaluate_claims(runs, histories, steps=...)` does the
rest; the verdict rule and its table of minimum effects live in `mtexp.verdicts`.
"""

from __future__ import annotations

import pandas as pd

from mtexp.evidence import (
    FROZEN_HEAD_KEYS,
    Check,
    ClaimResult,
    ClaimSpec,
    Part,
    evaluate_claim,
    missing_runs_hint,
)
from mtexp.results import add_derived
from mtexp.scenarios import GROUP, FrozenHead, Gradual, scenario_names
from mtexp.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    MISSING,
    MIXED,
    NOT_MEASURABLE,
    RULE,
    SUPPORTED,
    UNMEASURED,
)

__all__ = [
    "CLAIMS", "CONTRADICTED", "INCONCLUSIVE", "MISSING", "MIXED", "NOT_MEASURABLE", "RULE",
    "SUPPORTED", "UNMEASURED", "Check", "ClaimResult", "ClaimSpec", "Part", "claims_overview",
    "evaluate_claim", "evaluate_claims", "missing_runs_hint",
]

AFTER_EPOCHS = "cfg.freezing.after_epochs"  # epochs of joint training before a head freezes


def head_frozen_untrained(runs: pd.DataFrame) -> bool:
    """True unless every run froze its head after joint training (`freezing.after_epochs` > 0)."""
    if AFTER_EPOCHS not in runs.columns:
        return True
    return not pd.to_numeric(runs[AFTER_EPOCHS], errors="coerce").gt(0).all()


QUALITY_CTX = Check("{quality}", "context", "quality (test)", part="quality")
MEMORY = Check("cost.train_memory_mb", "lower", "less training memory", part="memory")
SPEED = Check("cost.seconds_per_epoch", "lower", "faster epochs", part="speed")
STEPS = "per-step losses (steps.csv, written with logger=csv)"
# The scenarios each freezing claim is about, and the reference they are compared with.
REFERENCE = scenario_names(lambda s: s.reference)
NOTHING_TRAINS = scenario_names(lambda s: not s.anything_trains)
FROZEN_ENCODER = scenario_names(lambda s: s.anything_trains and not s.encoder_trains)
FROZEN_HEADS = scenario_names(lambda s: issubclass(s, FrozenHead))
GRADUAL = scenario_names(lambda s: issubclass(s, Gradual))
LORA, BITFIT = ("lora",), ("bitfit",)
UNIFORM = ("adamw", "uniform")
LAYERWISE = ("llrd*", "discriminative*")
DECAY = ("cfg.optim.layer_decay", "cfg.optim.decay")


def _names(values: tuple[str, ...]) -> str:
    return " / ".join(values)


FREEZING_CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec(
        "F1", "encoder as a fixed feature extractor (trained probe: freezing=backbone; "
        "freezing=all as control)",
        "Nothing in the encoder is updated, so it is a fixed feature extractor: training is "
        "fastest and lightest, overfitting is least likely, which suits small labelled sets.",
        GROUP, FROZEN_ENCODER, REFERENCE,
        (SPEED, MEMORY,
         Check("convergence.overfit_gap", "lower", "smaller train-dev gap", part="overfitting"),
         Check("{quality}", "not_lower", "test score not lower", part="quality")),
        "learning_curve", "freezing=none,all,backbone data.train_fraction=0.01,0.05,0.2,1.0",
        subset="small", controls=NOTHING_TRAINS,
        note="Measured with a trained probe (the heads) on frozen features, "
        f"freezing={_names(FROZEN_ENCODER)}, at each train fraction below 1 against full "
        "fine-tuning at the same fraction and seed. "
        f"freezing={_names(NOTHING_TRAINS)} trains nothing, heads included: its time and memory "
        "are zero by construction and its scores are those of untrained heads, so it is a "
        "control row that never votes.",
        literature="BERT (Devlin et al. 2019, Table 7): frozen features into a trained BiLSTM "
        "reach 91.0-96.1 CoNLL-2003 dev F1 against 96.4 for fine-tuning.",
    ),
    ClaimSpec(
        "F2", f"backbone frozen, heads trained (freezing={_names(FROZEN_ENCODER)})",
        "The heads adapt to each task while the pre-trained encoder is kept; training is faster "
        "and lighter than full fine-tuning.",
        GROUP, FROZEN_ENCODER, REFERENCE,
        (SPEED, MEMORY,
         Check("cost.params_trainable", "lower", "fewer trainable parameters", part="parameters",
               construction="only the heads train: the scenario fixes the count"),
         Check("{quality}", "context", "quality cost (test)", part="quality")),
        "freezing", "freezing=none,backbone",
        literature="Sun et al. 2019 (IMDb, BERT-base): frozen features 6.79% test error against "
        "5.40% fine-tuned; Lee et al. 2019: tuning only the top quarter keeps ~90% of quality.",
    ),
    ClaimSpec(
        "F3", f"backbone frozen (freezing={_names(FROZEN_ENCODER)})",
        "Freezing the encoder avoids catastrophic forgetting of the pre-trained representation.",
        GROUP, FROZEN_ENCODER, REFERENCE,
        (Check("drift.cka.mean", "higher", "encoder unchanged (CKA to pre-trained)", part="drift",
               construction="a frozen encoder has CKA 1"),
         Check("drift.sts_spearman_change", "higher", "STS Spearman kept (after - before)",
               part="drift", construction="a frozen encoder keeps its STS score"),
         Check("drift.sts_spearman_change", "lower", "full fine-tuning forgets: STS Spearman "
               "after - before < 0", part="forgetting avoided", kind="within")),
        "freezing", "freezing=none,backbone",
        note="A frozen encoder keeps CKA 1 and its STS score by construction, so those rows do "
        "not vote; what can be measured is whether full fine-tuning (the reference) forgets, "
        "i.e. whether there is forgetting for freezing to avoid.",
        literature="Merchant et al. 2020: fine-tuning changes mostly the top layers; CKA "
        "(Kornblith et al. 2019) measures that change per layer, stably across seeds.",
    ),
    ClaimSpec(
        "F4", "backbone frozen, little labelled data",
        "With limited labelled data, freezing the encoder overfits less than full fine-tuning.",
        GROUP, FROZEN_ENCODER, REFERENCE,
        (Check("convergence.overfit_gap", "lower", "smaller train-dev gap", part="overfitting"),
         Check("{quality}", "higher", "better test score", part="quality")),
        "learning_curve", "freezing=none,backbone data.train_fraction=0.01,0.05,0.2,1.0",
        subset="small",
        note="Measured at each data.train_fraction below 1, separately.",
        literature="ULMFiT (Howard & Ruder 2018) trained the last layer only and got much worse "
        "error (TREC-6 16.09 vs 5.69), on full data.",
    ),
    ClaimSpec(
        "F5", f"one task head frozen (freezing={_names(FROZEN_HEADS)})",
        "Freezing one head focuses training on the other task, which then does better.",
        GROUP, FROZEN_HEADS, REFERENCE,
        (Check("{other}", "higher", "other task's test score", part="other task"),),
        "freezing", "freezing=none," + ",".join(scenario_names(
            lambda s: issubclass(s, FrozenHead), legacy=False)),
        variant_by=(*FROZEN_HEAD_KEYS, AFTER_EPOCHS), is_control=head_frozen_untrained,
        note="Each scenario row names how its head was frozen: freezing.after_epochs=N trains "
        "every part jointly for N epochs, then freezes the (now trained) head and trains on; "
        "N = 0 freezes it at its initial, random weights, so its task's loss only pulls the "
        "encoder towards a random head: such a row (and a run that predates the setting) does "
        "not test the claim and is shown as a control that never votes. The frozen head's "
        "loss weight is unchanged (model.loss_weights): the encoder keeps serving that task; "
        "dropping its loss weight is not measured here. The evidence reads the runs of every "
        "frozen-head scenario of the registry.",
    ),
    ClaimSpec(
        "F6", f"gradual unfreezing, top layers first (freezing={_names(GRADUAL)})",
        "Unfreezing from the top down adapts to the tasks while preventing catastrophic "
        "forgetting; the top layers carry the most task-specific change.",
        GROUP, GRADUAL, REFERENCE,
        (Check("drift.cka.mean", "higher", "less encoder drift (CKA)", part="drift"),
         Check("drift.sts_spearman_change", "higher", "STS Spearman kept (after - before)",
               part="forgetting"),
         Check("{quality}", "not_lower", "test score not lower", part="quality"),
         Check("drift.cka.top_minus_bottom", "lower", "top layer changes more than the bottom "
               "one under full fine-tuning (CKA top - bottom < 0)", part="top layers change most",
               kind="within")),
        "freezing", "freezing=none,gradual",
        literature="ULMFiT Tables 6-7 (LSTM): gradual unfreezing + discriminative LR + slanted "
        "triangular LR gave TREC-6 5.69 vs 6.86 error; on transformers Wolf (transformers#674) "
        "found no gain over plain fine-tuning.",
    ),
)

LR_CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec(
        "L1", "lower LR for the encoder than for the heads (optim=split)",
        "Heads need more adaptation than the pre-trained encoder, so they get a larger LR; "
        "small encoder steps avoid damaging pre-trained weights.",
        "optim", ("split*", "head_encoder*"), UNIFORM,
        (Check("{quality}", "higher", "better test score", part="quality"),
         Check("drift.cka.mean", "higher", "less encoder drift (CKA)", part="drift")),
        "lr", "optim=adamw,split",
    ),
    ClaimSpec(
        "L2", "layer-wise learning rates (optim=llrd / discriminative)",
        "Layer-wise learning rates converge faster.",
        "optim", LAYERWISE, UNIFORM,
        (Check("convergence.first_epoch_share", "higher", "larger share of the best dev score "
               "after the first epoch", part="convergence"),
         Check("convergence.epochs_to_95pct", "lower", "fewer epochs to 95% of best dev",
               part="convergence"),
         Check("convergence.best_epoch", "context", "best epoch", part="convergence")),
        "lr", "optim=adamw,llrd,discriminative", variant_by=DECAY,
        note="Epochs to 95% of the best dev score is an integer count over a few epochs; the "
        "first epoch's share of the best dev score (history.csv) measures the same speed on a "
        "continuous scale.",
    ),
    ClaimSpec(
        "L3", "layer-wise learning rates (optim=llrd / discriminative)",
        "Layer-wise learning rates optimise more stably: no exploding or vanishing behaviour, "
        "less variation across seeds.",
        "optim", LAYERWISE, UNIFORM,
        (Check("{quality}", "lower", "seed std of test score (ratio)", part="seed spread",
               kind="spread"),
         Check("stability.loss_spikes", "lower", "train-loss spikes (per step)",
               part="loss spikes", requires=f"needs {STEPS}")),
        "lr", "optim=adamw,llrd,discriminative logger=csv", variant_by=DECAY,
    ),
    ClaimSpec(
        "L4", "layer-wise learning rates (optim=llrd / discriminative)",
        "Layer-wise learning rates generalise better (higher dev/test scores).",
        "optim", LAYERWISE, UNIFORM,
        (Check("{quality}", "higher", "better test score", part="quality"),),
        "lr", "optim=adamw,llrd,discriminative", variant_by=DECAY,
        literature="Sun et al. 2019 (IMDb): decay 0.95 moved test error 5.42 -> 5.40; effects on "
        "transformers are expected to be small, so seeds and CIs matter.",
    ),
    ClaimSpec(
        "L5", "per-task head learning rates (optim=per_task_heads)",
        "Each head learning at its own pace improves the individual tasks.",
        "optim", ("per_task*",), UNIFORM,
        (Check("{quality}", "higher", "better test score per task", part="quality"),),
        "lr", "optim=adamw,per_task_heads",
    ),
)

PEFT_CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec(
        "P1", f"low-rank adapters (freezing={_names(LORA)})",
        "LoRA reaches the quality of full fine-tuning with a small fraction of the trainable "
        "parameters and less training memory.",
        GROUP, LORA, REFERENCE,
        (Check("{quality}", "not_lower", "test score not lower", part="quality"),
         MEMORY,
         Check("cost.params_trainable", "lower", "fewer trainable parameters", part="parameters",
               construction="the adapters' rank and target modules fix the count"),
         Check("cost.seconds_per_epoch", "context", "time per epoch", part="speed")),
        "freezing", "freezing=none,lora",
        literature="Hu et al. 2021 (LoRA): RoBERTa-base on GLUE at parity with full fine-tuning "
        "with about 0.3M trainable parameters (of 125M).",
    ),
    ClaimSpec(
        "P2", f"bias-only fine-tuning with little or medium labelled data (freezing={_names(BITFIT)})",
        "BitFit is competitive with full fine-tuning when labelled data is small or "
        "medium-sized.",
        GROUP, BITFIT, REFERENCE,
        (Check("{quality}", "not_lower", "test score within 1 point (margin 0.01)", part="quality",
               margin=0.01),
         Check("cost.params_trainable", "lower", "fewer trainable parameters", part="parameters",
               construction="the biases (and heads) fix the count")),
        "learning_curve", "freezing=none,bitfit data.train_fraction=0.01,0.05,0.2,1.0",
        subset="small",
        note="Measured at each data.train_fraction below 1, separately; 'competitive' is "
        "non-inferiority with a margin of 1 point.",
        literature="Ben Zaken et al. 2022 (BitFit): bias-only fine-tuning of BERT close to full "
        "fine-tuning on GLUE with about 0.1% of the parameters, best relative to full "
        "fine-tuning on small and medium training sets.",
    ),
)

CLAIMS: tuple[ClaimSpec, ...] = (*FREEZING_CLAIMS, *LR_CLAIMS, *PEFT_CLAIMS)


def evaluate_claims(runs: pd.DataFrame, histories: pd.DataFrame | None = None,
                    claims: tuple[ClaimSpec, ...] = CLAIMS,
                    steps: pd.DataFrame | None = None) -> list[ClaimResult]:
    """Every claim of `claims` against a `load_runs` frame (with `load_histories` for the
    convergence share of L2 and `load_steps` for the loss spikes of L3)."""
    df = add_derived(runs, histories, steps)
    return [evaluate_claim(spec, df) for spec in claims]


def claims_overview(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per claim: id, scenario, verdict, and its parts' verdicts with their evidence."""
    rows = [{"id": res.spec.id, "scenario": res.spec.scenario, "verdict": res.verdict,
             "parts": "; ".join(map(str, res.parts)) or "-"} for res in results]
    return pd.DataFrame(rows)
