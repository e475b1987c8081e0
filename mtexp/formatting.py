"""Numbers as the reports show them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


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
