"""The compact metrics table printed at the end of a run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The metrics of each task that the end-of-run table shows, when the task has them.
DISPLAYED = ("accuracy", "macro_f1", "precision", "recall", "f1", "sentence_accuracy")


def metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str, float | None, float | None]]:
    rows = []
    test = metrics.get("test", {})
    for task, values in test.items():
        if not isinstance(values, Mapping):
            continue
        for name in DISPLAYED:
            if name in values:
                dev_value = metrics.get("dev", {}).get(task, {}).get(name)
                rows.append((task, name, dev_value, values[name]))
    return rows


def format_metrics_table(metrics: Mapping[str, Any], run_dir: Path | None = None) -> str:
    lines = [f"{'task':<10} {'metric':<18} {'dev':>8} {'test':>8}"]
    for task, name, dev_value, test_value in metric_rows(metrics):
        lines.append(f"{task:<10} {name:<18} {_fmt(dev_value):>8} {_fmt(test_value):>8}")
    cost = metrics.get("cost", {})
    lines.append(
        f"best epoch {metrics.get('best_epoch')}, trainable params {cost.get('params_trainable', 0):,}"
        f" of {cost.get('params_total', 0):,}, {cost.get('train_seconds', 0):.1f} s training"
        f" ({cost.get('train_samples_per_second', 0):.0f} samples/s), peak memory"
        f" {cost.get('peak_memory_mb', 0):.0f} MB"
    )
    if run_dir is not None:
        lines.append(f"run directory: {run_dir}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
