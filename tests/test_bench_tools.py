"""`convers bench tools` runs the real reply loop and reports its overhead as JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner

from convers.cli import main


def test_bench_tools_writes_a_result(tmp_path) -> None:
    out = tmp_path / "tools.json"
    result = CliRunner().invoke(main, ["bench", "tools", "--replies", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "tool round trip overhead over 5 replies" in result.output
    data = json.loads(out.read_text())
    assert data["benchmark"] == "tool_round_trip_overhead" and data["overhead_ms"]["n"] == 5
    assert data["overhead_ms"]["min"] >= 0  # the tool's own time is taken out, never more than the span


def test_bench_tools_refuses_zero_replies() -> None:
    result = CliRunner().invoke(main, ["bench", "tools", "--replies", "0"])
    assert result.exit_code != 0 and "at least 1" in result.output
