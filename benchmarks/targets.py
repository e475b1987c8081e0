"""The performance targets, checked against one session's benchmark results, and the headline
ratios: like for like first, then default against default."""

from __future__ import annotations

from typing import Any

from ablation import ALL_REMOVED, AS_IS

ENCODE_DEFAULT_SPEEDUP, AUTO_MIN_COSINE = 1.5, 0.9999  # default encode() vs SentenceTransformer's
TRAIN_SPEEDUP, QUALITY_POINTS = 1.3, 0.5  # like for like, both tasks within 0.5 points
BACKBONE_MEMORY, BACKBONE_TIME = 0.6, 0.3
STORED_CACHE_SHARE = 0.05  # a second frozen-backbone run's cache time over the first's
ENCODE_SHARE = 0.5
TRAIN_SHARE = {"fp32": 0.65, "bf16": 0.5}  # of the matmul peak in the same dtype
LIKE_FOR_LIKE = ("train-fp32", "train-bf16")


def verdict(name: str, value: Any, rule: str, met: bool | None) -> str:
    status = "not measured" if met is None else ("met" if met else "missed")
    return f"{status}: {name} = {value} (target {rule})"


def encode_targets(ratios: dict[str, Any]) -> list[str]:
    speed, cosine = ratios.get("mtexp_default_vs_st_default_speed"), ratios.get("mtexp_default_min_cosine")
    precision = ratios.get("mtexp_default_precision", "?")
    return [
        verdict(f"default encode() ({precision}) vs SentenceTransformer.encode() default, speed", speed,
                f">= {ENCODE_DEFAULT_SPEEDUP}", None if speed is None else speed >= ENCODE_DEFAULT_SPEEDUP),
        verdict("default encode() min cosine to fp32", cosine, f">= {AUTO_MIN_COSINE}",
                None if cosine is None else cosine >= AUTO_MIN_COSINE),
    ]


def train_targets(result: dict[str, Any]) -> list[str]:
    ratios, precision = result["ratios"], result["settings"]["precision"]
    speed = ratios["mtexp_vs_hf_samples_per_second"]
    intent, slots = ratios["intent_accuracy_points_mtexp_minus_hf"], ratios["slot_f1_points_mtexp_minus_hf"]
    return [
        verdict(f"training samples/s vs HF Trainer (length-grouped), {precision}", speed,
                f">= {TRAIN_SPEEDUP}", speed >= TRAIN_SPEEDUP),
        verdict(f"test intent accuracy, mtexp - HF points, {precision}", intent,
                f"|difference| <= {QUALITY_POINTS}", abs(intent) <= QUALITY_POINTS),
        verdict(f"test slot F1, mtexp - HF points, {precision}", slots,
                f"|difference| <= {QUALITY_POINTS}", abs(slots) <= QUALITY_POINTS),
    ]


def freezing_targets(ratios: dict[str, Any]) -> list[str]:
    time_key = next((key for key in ratios if key.startswith("backbone/none wall time")), None)
    lines = []
    for key in ("backbone/none peak_memory_mb", "backbone/none train_memory_mb"):
        if key in ratios:
            lines.append(verdict(key, ratios[key], f"<= {BACKBONE_MEMORY}", ratios[key] <= BACKBONE_MEMORY))
    if time_key:
        lines.append(verdict(time_key, ratios[time_key], f"<= {BACKBONE_TIME}",
                             ratios[time_key] <= BACKBONE_TIME))
    stored = ratios.get("backbone second/first run cache_seconds")
    if stored is not None:
        lines.append(verdict("backbone second/first run cache_seconds (stored frozen features)", stored,
                             f"<= {STORED_CACHE_SHARE}", stored <= STORED_CACHE_SHARE))
    return lines


def hardware_targets(ratios: dict[str, Any], estimates: dict[str, float]) -> list[str]:
    lines = []
    for dtype in ("fp32", "bf16"):
        key = f"encode() {dtype} / matmul peak"
        if key in ratios:
            lines.append(verdict(key, ratios[key], f">= {ENCODE_SHARE}", ratios[key] >= ENCODE_SHARE))
    for key, value in estimates.items():
        if key.startswith("mtexp training"):
            share = TRAIN_SHARE["bf16" if " bf16 " in key else "fp32"]
            lines.append(verdict(key, value, f">= {share}", value >= share))
    return lines


def target_verdicts(results: list[dict[str, Any]], estimates: dict[str, float]) -> list[str]:
    """One line per target: met / missed, the measured value and the rule."""
    by_name = {result["benchmark"]: result for result in results}
    lines = []
    if "encode" in by_name:
        lines += encode_targets(by_name["encode"]["ratios"])
    for name in LIKE_FOR_LIKE:
        if name in by_name:
            lines += train_targets(by_name[name])
    if "freezing" in by_name:
        lines += freezing_targets(by_name["freezing"]["ratios"])
    lines += hardware_targets(by_name.get("hardware", {}).get("ratios", {}), estimates)
    return lines


def speed_accounting(results: list[dict[str, Any]]) -> list[str]:
    """Per like-for-like pairing with an ablation in its precision: how much of mtexp's step the
    TRAIN_SPEEDUP target would have to take away, against the share that dropout, the word-embedding
    gradient and the optimizer step take together (removing all three is the ablation's largest
    bound), and what each variant alone gains."""
    by_name = {result["benchmark"]: result for result in results}
    ablation = by_name.get("ablation", {}).get("rows", [])
    lines = []
    for name in LIKE_FOR_LIKE:
        result = by_name.get(name)
        precision = result["settings"]["precision"] if result else None
        bounds = {row["variant"]: row["bound"] for row in ablation
                  if row["precision"] == precision and row["variant"] != AS_IS}
        if not bounds:
            continue
        speed = result["ratios"]["mtexp_vs_hf_samples_per_second"]
        needed = TRAIN_SPEEDUP / speed
        if needed <= 1:
            lines.append(f"{precision}: met ({speed}x); nothing to take away")
            continue
        gone = 1 - 1 / needed
        line = (f"{precision}: {TRAIN_SPEEDUP}x from {speed}x needs mtexp's training step {needed:.2f}x "
                f"faster, {gone:.1%} of its time gone")
        if ALL_REMOVED in bounds:
            removable = 1 - 1 / bounds[ALL_REMOVED]
            line += (f"; dropout, the word-embedding gradient and the optimizer step take {removable:.1%} "
                     f"({ALL_REMOVED}: {bounds[ALL_REMOVED]}x), so ")
            line += ("not even all of that work gone would do" if removable < gone
                     else f"{gone / removable:.0%} of that work would have to go")
        alone = ", ".join(f"{variant} {bound}x" for variant, bound in bounds.items()
                          if variant != ALL_REMOVED)
        lines.append(f"{line}; each alone: {alone}" if alone else line)
    return lines


def headlines(results: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The speed ratios, like for like (same precision, same batching) apart from default
    against default (each tool as a user gets it)."""
    by_name = {result["benchmark"]: result for result in results}
    like: list[str] = []
    default: list[str] = []
    for name in LIKE_FOR_LIKE:
        if name in by_name:
            like.append(train_line(by_name[name], "length-grouped HF Trainer"))
    encode = by_name.get("encode", {}).get("ratios", {})
    for precision in ("fp32", "bf16"):
        value = encode.get(f"mtexp_{precision}_vs_st_{precision}_speed")
        if value is not None:
            like.append(f"encode, {precision}: mtexp {value}x sentence-transformers ({precision})")
    if "train-default" in by_name:
        default.append(train_line(by_name["train-default"], "HF Trainer with its defaults"))
    if encode.get("mtexp_default_vs_st_default_speed") is not None:
        default.append(f"encode: encode() ({encode['mtexp_default_precision']}) "
                       f"{encode['mtexp_default_vs_st_default_speed']}x SentenceTransformer.encode() (fp32)")
    return {"Like for like": like, "Default against default": default}


def train_line(result: dict[str, Any], anchor: str) -> str:
    ratios, rows = result["ratios"], {row["runner"]: row for row in result["rows"]}
    mtexp, hf = rows["mtexp"], rows["hf-trainer"]
    pairs = ratios.get("mtexp_vs_hf_samples_per_second_by_round")
    by_round = f"; each round's pair: {', '.join(f'{value}x' for value in pairs)}" if pairs else ""
    count = len(mtexp.get("seeds", []))
    seeds = f" (test scores: mean of {count} seeds)" if count > 1 else ""
    return (f"training, mtexp {mtexp.get('precision')} vs {anchor} ({hf.get('precision')}, "
            f"{hf.get('batches', '?')} batches): {ratios['mtexp_vs_hf_samples_per_second']}x "
            f"({mtexp['train_samples_per_second']} vs {hf['train_samples_per_second']} samples/s{by_round}); "
            f"intent {ratios['intent_accuracy_points_mtexp_minus_hf']:+} points, "
            f"slot F1 {ratios['slot_f1_points_mtexp_minus_hf']:+} points{seeds}")
