"""`convers memory ...`: list, search, forget, wipe (with confirmation), export and import."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from convers.cli import main
from convers.contracts.memory import MemoryStoreError
from convers.memory.store import SqliteMemoryStore

RECORDS = [
    {"id": "a1", "session": "s1", "time": "2025-01-05T10:00:00+00:00", "speaker": "Sam", "role": "user",
     "text": "My dog Biscuit loves the beach"},
    {"id": "a2", "session": "s1", "time": "2025-01-05T10:00:05+00:00", "speaker": "Juniper", "role": "assistant",
     "text": "Biscuit sounds like a happy dog!"},
    {"id": "a3", "session": "s2", "time": "2025-02-01T18:30:00+00:00", "speaker": "Sam", "role": "user",
     "text": "Work was busy this week"},
]


def run(tmp_path: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(main, ["--data-dir", str(tmp_path), *args], input=input)


def test_import_list_search_forget_export_wipe(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    result = run(tmp_path, "memory", "import", str(source), "--no-embed")
    assert result.exit_code == 0, result.output
    assert "imported 3 turns, skipped 0" in result.output

    listed = run(tmp_path, "memory", "list")
    assert listed.output.splitlines()[0].startswith("a3  2025-02-01 18:30  Sam: Work was busy")

    found = run(tmp_path, "memory", "search", "Biscuit beach", "--mode", "lexical")
    assert found.exit_code == 0 and found.output.split()[1] == "a1"

    assert run(tmp_path, "memory", "forget", "a2").exit_code == 0
    missing = run(tmp_path, "memory", "forget", "a2")
    assert missing.exit_code != 0 and "no stored turn has id 'a2'" in missing.output

    out = tmp_path / "out.jsonl"
    assert run(tmp_path, "memory", "export", str(out)).exit_code == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == [RECORDS[0], RECORDS[2]]

    refused = run(tmp_path, "memory", "wipe", input="n\n")
    assert refused.exit_code != 0
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        assert store.count() == 2
    wiped = run(tmp_path, "memory", "wipe", "--yes")
    assert wiped.exit_code == 0 and "wiped 2 turns" in wiped.output
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        assert store.count() == 0


def test_bad_import_file_imports_nothing(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps({**RECORDS[1], "role": "robot"}) + "\n")
    result = run(tmp_path, "memory", "import", str(source), "--no-embed")
    assert result.exit_code != 0 and "line 2: role" in result.output and "nothing was imported" in result.output


def test_corrupt_database_is_reported_by_the_cli(tmp_path: Path) -> None:
    (tmp_path / "memory.db").write_bytes(b"garbage" * 1000)
    result = run(tmp_path, "memory", "list")
    assert result.exit_code != 0 and "damaged" in result.output
    assert (tmp_path / "memory.db").read_bytes() == b"garbage" * 1000
    assert issubclass(MemoryStoreError, RuntimeError)


def test_status_shows_counts_and_what_still_needs_a_vector(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    assert run(tmp_path, "memory", "import", str(source), "--no-embed").exit_code == 0
    status = run(tmp_path, "memory", "status")
    assert status.exit_code == 0, status.output
    assert "3 turns, 0 summaries, 1 derived key (" in status.output  # "Biscuit" inside a sentence
    assert "re-embedding: 0 of 3 current, 3 without a vector" in status.output
    assert "schema 5" in status.output
