"""summarise: the few figures a benchmark reports of a list of measurements (percentiles, extremes, count).

Every benchmark names its own keys in its JSON ("p50", "p95_ms", "min"...); this is the one place
they are computed. Percentiles interpolate linearly between the closest ranks (numpy's default).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_PERCENTILE = re.compile(r"p(\d{1,2})")


def summarise(values: Sequence[float], stats: Sequence[str] = ("p50", "p95"), *, digits: int = 1,
              scale: float = 1.0, suffix: str = "", count: bool = True) -> dict[str, float | int | None]:
    """`stats` of `values` x `scale`, rounded to `digits`, each under its name + `suffix` ("min",
    "max", "pNN": the NNth percentile), and "n" when `count`; None for each when there are none."""
    array = np.asarray(values, dtype=float) * scale
    summary: dict[str, float | int | None] = {}
    for stat in stats:
        summary[stat + suffix] = round(float(_stat(array, stat)), digits) if len(array) else None
    if count:
        summary["n"] = len(array)
    return summary


def _stat(array: np.ndarray, stat: str) -> float:
    if stat == "min":
        return float(array.min())
    if stat == "max":
        return float(array.max())
    match = _PERCENTILE.fullmatch(stat)
    if match is None:
        raise ValueError(f"unknown statistic {stat!r}: min, max or pNN")
    return float(np.percentile(array, int(match.group(1))))
