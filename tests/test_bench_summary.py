"""summarise: the figures benchmarks report of a list of measurements."""

from __future__ import annotations

import pytest

from convers.bench.summary import summarise


def test_percentiles_extremes_and_count_under_the_benchmarks_own_names() -> None:
    values = [0.001, 0.002, 0.003, 0.004, 0.010]
    assert summarise(values, ("min", "p50", "max"), digits=2, scale=1000, suffix="_ms") == {
        "min_ms": 1.0, "p50_ms": 3.0, "max_ms": 10.0, "n": 5}
    assert summarise([1.0, 2.0, 3.0, 4.0, 5.0], ("p5", "p95"), count=False) == {"p5": 1.2, "p95": 4.8}


def test_nothing_measured_gives_none_for_each_figure() -> None:
    assert summarise([], ("p50", "p95")) == {"p50": None, "p95": None, "n": 0}


def test_an_unknown_statistic_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown statistic"):
        summarise([1.0], ("mean",))
