"""The performance targets, checked against one session's benchmark results."""

from __future__ import annotations

from typing import Any

ENCODE_SPEEDUP, MIN_COSINE = 1.5, 0.999
TRAIN_SPEEDUP, INTENT_POINTS, SLOT_F1_POINTS = 1.5, 0.5, 1.0
BACKBONE_MEMORY, BACKBONE_TIME = 0.6, 0.3
ENCODE_SHARE, TRAIN_SHARE = 0.5, 0.35


def verdict(name: str, value: Any, rule: str, met: bool | None) -> str:
    status = "not measured" if met is None else ("met" if met else "missed")
    return f"{status}: {name} = {value} (target {rule})"


def encode_targets(ratios: dict[str, Any]) -> list[str]:
    speed, cosine = ratios["mtexp_fastest_vs_st_fp32_speed"], ratios["mtexp_fastest_min_cosine"]
    return [
        verdict(f"encode speed vs sentence-transformers fp32 ({ratios['mtexp_fastest_setting']})", speed,
                f">= {ENCODE_SPEEDUP}", speed >= ENCODE_SPEEDUP),
        verdict("encode min cosine to fp32", cosine, f">= {MIN_COSINE}", cosine >= MIN_COSINE),
    ]


def train_targets(result: dict[str, Any]) -> list[str]:
    ratios, precision = result["ratios"], result["settings"]["precision"]
    speed = ratios["mtexp_vs_hf_samples_per_second"]
    intent, slots = ratios["intent_accuracy_points_mtexp_minus_hf"], ratios["slot_f1_points_mtexp_minus_hf"]
    return [
        verdict(f"training samples/s vs HF Trainer, {precision}", speed, f">= {TRAIN_SPEEDUP}",
                speed >= TRAIN_SPEEDUP),
        verdict(f"test intent accuracy, mtexp - HF points, {precision}", intent,
                f"|difference| <= {INTENT_POINTS}", abs(intent) <= INTENT_POINTS),
        verdict(f"test slot F1, mtexp - HF points, {precision}", slots,
                f"|difference| <= {SLOT_F1_POINTS}", abs(slots) <= SLOT_F1_POINTS),
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
    return lines


def hardware_targets(ratios: dict[str, Any], estimates: dict[str, float]) -> list[str]:
    lines = []
    for dtype in ("fp32", "bf16"):
        key = f"encode() {dtype} / matmul peak"
        if key in ratios:
            lines.append(verdict(key, ratios[key], f">= {ENCODE_SHARE}", ratios[key] >= ENCODE_SHARE))
    for key, value in estimates.items():
        if key.startswith("mtexp training"):
            lines.append(verdict(key, value, f">= {TRAIN_SHARE}", value >= TRAIN_SHARE))
    return lines


def target_verdicts(results: list[dict[str, Any]], estimates: dict[str, float]) -> list[str]:
    """One line per target: met / missed, the measured value and the rule."""
    by_name = {result["benchmark"]: result for result in results}
    lines = []
    if "encode" in by_name:
        lines += encode_targets(by_name["encode"]["ratios"])
    for result in results:
        if result["benchmark"].startswith("train-"):
            lines += train_targets(result)
    if "freezing" in by_name:
        lines += freezing_targets(by_name["freezing"]["ratios"])
    if "hardware" in by_name:
        lines += hardware_targets(by_name["hardware"]["ratios"], estimates)
    return lines
