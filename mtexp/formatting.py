"""Numbers as the reports show them.

`fmt` is the compact form of claims.md's evidence; `number` and `estimate` are the readable form
of the summary and the answer: three significant digits, parameters in k/M, times in s/min/h,
memory in MB/GB, and "exact" in place of an interval of zero width.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SIGNIFICANT = 3
MAX_DECIMALS = 6
EXACT = 1e-9  # a std below this share of the mean is rounding error: the runs agree exactly
# Kinds of quantity, read from a metric's name (`metric_kind`), and their units: (size, name)
# from the smallest up; a value takes the largest unit it reaches. Counts join their unit
# without a space (22.6M).
UNITS: dict[str, tuple[tuple[float, str], ...]] = {
    "seconds": ((1.0, "s"), (60.0, "min"), (3600.0, "h")),
    "megabytes": ((1.0, "MB"), (1024.0, "GB")),
    "count": ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G")),
    "plain": ((1.0, ""),),
}


def decimals(x: float) -> int:
    a = abs(x)
    return 0 if a >= 1000 or a == 0 else 1 if a >= 10 else 3 if a > 1 else 4


def fmt(x: Any, digits: int | None = None) -> str:
    """Compact number: thousands separators for large values, 4 decimals for scores."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if not isinstance(x, (int, float, np.number)):
        return str(x)
    if digits is None:
        integral = isinstance(x, (int, np.integer)) or (abs(x) >= 10 and float(x).is_integer())
        digits = 0 if integral else decimals(x)
    text = f"{x:,.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.,") else text  # no "-0.0000"


def metric_kind(metric: str) -> str:
    """`seconds` (cost.train_seconds, cost.seconds_per_epoch), `megabytes` (cost.*memory_mb),
    `count` (cost.params_*, epochs, steps, spikes), else `plain`."""
    name = metric.rsplit(".", 1)[-1]
    if "seconds" in name and "per_second" not in name:
        return "seconds"
    if name.endswith("_mb"):
        return "megabytes"
    if name.startswith(("params", "epochs", "steps")) or name.endswith(("_epoch", "spikes")):
        return "count"
    return "plain"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def unit_for(x: float, kind: str) -> tuple[float, str]:
    """The unit (size, name) of `kind` that shows `x` best: the largest one `x` reaches."""
    units = UNITS.get(kind, UNITS["plain"])
    return next((u for u in reversed(units) if abs(x) >= u[0]), units[0])


def significant_decimals(x: float, digits: int = SIGNIFICANT) -> int:
    """Decimals that show `x` with `digits` significant digits (negative: round to tens, ...)."""
    if x == 0 or not math.isfinite(x):
        return 0
    return min(digits - 1 - math.floor(math.log10(abs(x))), MAX_DECIMALS)


def _plain(x: float, places: int) -> str:
    """`x` rounded to `places` decimals (negative: to tens, hundreds, ...), thousands separated."""
    if places < 0:
        x, places = round(x, places), 0
    text = f"{x:,.{places}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.,") else text  # no "-0.00"


def _join(text: str, unit: str, kind: str) -> str:
    if not unit:
        return text
    return f"{text}{unit}" if kind == "count" else f"{text} {unit}"


def number(x: Any, kind: str = "plain", digits: int = SIGNIFICANT) -> str:
    """One value with `digits` significant digits in its unit: `0.962`, `4.61 min`, `22.6M`,
    `777 MB`, `1,640`; "–" when missing."""
    if _missing(x):
        return "–"
    if not isinstance(x, (int, float, np.number)):
        return str(x)
    size, unit = unit_for(float(x), kind)
    value = float(x) / size
    places = significant_decimals(value, digits)
    if kind == "count" and size == 1 and value.is_integer():
        places = min(places, 0)  # a whole count below a thousand: no decimals
    return _join(_plain(value, places), unit, kind)


def estimate(mean: Any, std: Any = None, low: Any = None, high: Any = None, kind: str = "plain",
             digits: int = SIGNIFICANT) -> str:
    """A mean over seeds with its std and interval, all in the mean's unit and to the mean's
    precision: `0.962 ± 0.002 [0.957, 0.966]`, `4.61 ± 1.09 [1.90, 7.31] min` (the unit
    once, at the end); `22.6M exact`
    when the runs agree exactly; the mean alone without a std (one run)."""
    if _missing(mean):
        return "–"
    if _missing(std) or _missing(low) or _missing(high):
        return number(mean, kind, digits)
    if std <= EXACT * abs(mean) or low == high:  # equal values, up to floating-point rounding
        return f"{number(mean, kind, digits)} exact"
    size, unit = unit_for(float(mean), kind)
    scaled = [float(v) / size for v in (mean, std, low, high)]
    places = significant_decimals(scaled[0] or scaled[1], digits)
    # the std keeps at least one significant digit rather than print as 0.000
    m, lo, hi = (_plain(v, places) for v in (scaled[0], *scaled[2:]))
    s = _plain(scaled[1], max(places, significant_decimals(scaled[1], 1)))
    return f"{m} ± {s} [{lo}, {hi}] {unit}".rstrip()


def with_interval(mean: Any, low: Any = None, high: Any = None, kind: str = "plain",
                  digits: int = SIGNIFICANT) -> str:
    """A mean and its interval without the std: `0.962 [0.957, 0.966]`, `22.6M exact`."""
    text = estimate(mean, 0.0 if low == high else 1.0, low, high, kind, digits)
    if " ± " not in text:
        return text
    head, tail = text.split(" ± ", 1)
    return f"{head} {tail[tail.index('['):]}"
