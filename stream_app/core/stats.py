"""Percentiles as the demo and the benchmarks report them (nearest rank)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN when there are no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def percentiles(
    values: Sequence[float], quantiles: Iterable[int] = (50, 95, 99)
) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` rounded to 0.1."""
    return {f"p{q}": round(percentile(values, q), 1) for q in quantiles}
