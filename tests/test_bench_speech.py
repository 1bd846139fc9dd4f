"""`convers bench speech` and `convers bench speech-cost` on the command line: what they refuse, what they write."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from convers.cli import main


def test_an_unknown_case_is_named_with_the_choices(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "bench", "speech", "--cases", "money,nope"])
    assert result.exit_code == 2
    assert "unknown case nope" in result.output and "url" in result.output


def test_speech_cost_writes_its_json(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps([{"reply": "Sure. Visit example.com today! Then call me."}]), encoding="utf-8")
    out = tmp_path / "cost.json"
    result = CliRunner().invoke(main, ["bench", "speech-cost", "--replies", str(replies), "--rounds", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["kind"] == "speech-cost" and written["replies"] == 5  # the 4 reference replies and this one
    assert "goal ms_per_token" in result.output


def test_speech_cost_refuses_a_file_that_is_not_a_case_file(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text("[1, 2]", encoding="utf-8")
    result = CliRunner().invoke(main, ["bench", "speech-cost", "--replies", str(replies)])
    assert result.exit_code == 2
    assert "cannot be read as a list" in result.output
