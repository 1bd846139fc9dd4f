"""The data directory and everything convers writes in it are private to the user: 0700 / 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timezone
from pathlib import Path

import pytest

from convers.contracts.events import EventKind
from convers.contracts.memory import MemoryTurn
from convers.events import EventLog
from convers.memory.profile import ProfileFile
from convers.memory.store import SqliteMemoryStore
from convers.transports.browser import auth


@pytest.fixture(autouse=True)
def everyday_umask() -> Iterator[None]:
    """The usual 022: without care, new files would be readable by every local user."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def a_turn() -> MemoryTurn:
    return MemoryTurn("t1", "s1", datetime(2025, 1, 1, tzinfo=UTC), "Sam", "user", "my secret")


def test_a_fresh_data_dir_and_everything_in_it_are_private(tmp_path: Path) -> None:
    data = tmp_path / "convers"
    store = SqliteMemoryStore(data / "memory.db")
    store.add(a_turn())
    log = EventLog(data / "events" / "s1.jsonl")
    log.emit(EventKind.USER_TURN, turn=1)
    ProfileFile(data / "profile.json").update("name", "Sam")
    auth.load_or_create_token(data)
    wal = data / "memory.db-wal"
    assert wal.exists()  # a committed turn sits in the WAL until a checkpoint
    for path in (data, data / "events"):
        assert mode(path) == 0o700, path
    for path in (data / "memory.db", wal, data / "memory.db-shm", data / "events" / "s1.jsonl",
                 data / "profile.json", auth.token_path(data)):
        assert mode(path) == 0o600, path
    log.close()
    store.close()


def test_what_an_earlier_version_left_readable_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "convers"
    (data / "events").mkdir(parents=True)
    SqliteMemoryStore(data / "memory.db").close()
    (data / "events" / "old.jsonl").write_text("{}\n")
    for path in (data, data / "events"):
        path.chmod(0o755)
    for path in (data / "memory.db", data / "events" / "old.jsonl"):
        path.chmod(0o644)
    store = SqliteMemoryStore(data / "memory.db")
    log = EventLog(data / "events" / "old.jsonl")
    assert mode(data) == 0o700 and mode(data / "events") == 0o700
    assert mode(data / "memory.db") == 0o600 and mode(data / "events" / "old.jsonl") == 0o600
    log.close()
    store.close()


def test_a_read_only_file_stays_read_only(tmp_path: Path) -> None:
    from convers.private_files import tighten

    path = tmp_path / "f"
    path.write_text("x")
    path.chmod(0o444)
    tighten(path)
    assert mode(path) == 0o400


def test_serve_makes_the_data_dir_private(tmp_path: Path, monkeypatch) -> None:
    """`convers serve` creates the data directory before anything else writes to it."""
    from convers.cli import serve

    data = tmp_path / "data"
    monkeypatch.setattr(serve, "run_server", lambda *args, **kwargs: None)
    monkeypatch.setattr(serve, "build_app", lambda *args: None)
    from click.testing import CliRunner

    from convers.cli import main

    result = CliRunner().invoke(main, ["--data-dir", str(data), "serve", "--host", "127.0.0.1"])
    assert result.exit_code == 0, result.output
    assert mode(data) == 0o700
    assert mode(auth.token_path(data)) == 0o600
