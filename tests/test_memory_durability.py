"""kill -9 mid-conversation loses no committed turn; two processes can write at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from convers.memory.store import SqliteMemoryStore

WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from convers.contracts.memory import MemoryTurn
    from convers.memory.store import SqliteMemoryStore

    path, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = SqliteMemoryStore(path, busy_timeout_s=30)
    for i in range(count):
        turn_id = f"{prefix}-{i}"
        store.add(MemoryTurn(turn_id, prefix, datetime.now(timezone.utc), "Sam", "user", f"turn {i} " + "w" * 200))
        # Printed only after add() returned, i.e. after COMMIT: these ids must survive anything.
        print(turn_id, flush=True)
    store.close()
    """
)


def _writer(path: Path, prefix: str, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), prefix, str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def test_kill_9_mid_write_keeps_every_committed_turn(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    SqliteMemoryStore(path).close()
    writer = _writer(path, "k", 100_000)
    committed: list[str] = []
    assert writer.stdout is not None
    while len(committed) < 150:
        line = writer.stdout.readline()
        assert line, writer.stderr.read() if writer.stderr else "writer died"
        committed.append(line.strip())
    writer.send_signal(signal.SIGKILL)  # mid-write: it is busy adding the next turns
    writer.wait()
    committed.extend(line.strip() for line in writer.stdout.read().splitlines() if line.strip())
    with SqliteMemoryStore(path) as store:
        stored = {t.id for t in store.list(1_000_000, kind=None)}
        assert set(committed) <= stored
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # The FTS index stayed in step with the table (same transaction).
        assert store._conn.execute("SELECT count(*) FROM turns_words").fetchone()[0] == len(stored)


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    writers = [_writer(path, "a", 150), _writer(path, "b", 150)]
    deadline = time.monotonic() + 120
    for writer in writers:
        _, err = writer.communicate(timeout=max(1, deadline - time.monotonic()))
        assert writer.returncode == 0, err
    with SqliteMemoryStore(path) as store:
        ids = {t.id for t in store.list(1000)}
    assert ids == {f"{p}-{i}" for p in "ab" for i in range(150)}


HOLDER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import datetime, timezone
    from convers.contracts.memory import MemoryTurn
    from convers.memory.store import SqliteMemoryStore

    def turn(text):
        return MemoryTurn(text, "s", datetime.now(timezone.utc), "Sam", "user", text)

    path = sys.argv[1]
    server = SqliteMemoryStore(path)          # the server's panel store, open all along
    server.add(turn("before"))
    session = SqliteMemoryStore(path)         # a new connection's store opens the same file
    print("open", flush=True)
    sys.stdin.readline()                      # meanwhile another process reads the database and closes
    server.add(turn("after"))
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_commit_after_another_process_read_the_database_survives_kill_9(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "memory.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "open", holder.stderr.read() if holder.stderr else ""
    with sqlite3.connect(path) as reader:  # `convers memory list`, a backup, the sqlite3 shell
        assert reader.execute("SELECT count(*) FROM turns").fetchone()[0] == 1
    reader.close()
    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "committed"
    holder.wait()
    with SqliteMemoryStore(path) as store:
        assert {t.id for t in store.list(10)} == {"before", "after"}
