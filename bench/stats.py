"""Percentiles and small figures, in milliseconds."""

import math
from collections.abc import Sequence
from typing import TypedDict


class Summary(TypedDict):
    n: int
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    max: float | None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on an already sorted list."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values_ms: Sequence[float]) -> Summary:
    """n, p50, p95, p99, mean and max of a list of milliseconds (rounded to 0.1 ms)."""
    if not values_ms:
        return Summary(n=0, p50=None, p95=None, p99=None, mean=None, max=None)
    s = sorted(values_ms)
    return Summary(
        n=len(s),
        p50=round(percentile(s, 0.50), 1),
        p95=round(percentile(s, 0.95), 1),
        p99=round(percentile(s, 0.99), 1),
        mean=round(sum(s) / len(s), 1),
        max=round(s[-1], 1),
    )


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
