"""The derived keys table as SQL over one connection: writing, finding, listing and forgetting keys.

Each row ties one key (an entity or a topic, memory/derived_keys.py; an observation,
memory/observations.py) to the turn it was derived from by the turn's rowid, so forgetting a turn
(or wiping) removes its keys in the same transaction. An observation's vector is kept once per
text in `observation_vectors` and goes with the last key of that text (`drop_unused_observations`).
Like memory/turn_table.py: no locking, no error handling; the store does both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from convers.contracts.memory import KEY_KINDS
from convers.memory.derived_keys import DerivedKey

KINDS = KEY_KINDS
# One SQL statement takes at most this many bound keys (SQLite's limit is far higher; questions are short).
MAX_KEYS = 200


def replace_keys(conn: sqlite3.Connection, rowid: int, kind: str, keys: Iterable[str]) -> None:
    """Sets the `kind` keys of one turn (those it had of that kind are replaced)."""
    conn.execute("DELETE FROM turn_keys WHERE turn_rowid = ? AND kind = ?", (rowid, kind))
    conn.executemany("INSERT OR IGNORE INTO turn_keys (turn_rowid, kind, key) VALUES (?, ?, ?)",
                     [(rowid, kind, key) for key in keys])


def delete_for(conn: sqlite3.Connection, rowids: Sequence[int]) -> None:
    conn.executemany("DELETE FROM turn_keys WHERE turn_rowid = ?", [(r,) for r in rowids])


def delete_all(conn: sqlite3.Connection) -> int:
    count = int(conn.execute("SELECT count(*) FROM turn_keys").fetchone()[0])
    conn.execute("DELETE FROM turn_keys")
    conn.execute("DELETE FROM observation_vectors")
    return count


def add_observations(conn: sqlite3.Connection, rowids: Sequence[int], keys: Sequence[str],
                     vectors: Sequence[bytes], embedder_key: str | None) -> int:
    """Ties each observation to every turn of `rowids`, and keeps its vector (once per text); how many
    (turn, observation) pairs are new."""
    conn.executemany("INSERT OR IGNORE INTO observation_vectors (key, embedding, embedder) VALUES (?, ?, ?)",
                     [(key, vector, embedder_key) for key, vector in zip(keys, vectors, strict=True)])
    before = conn.total_changes
    conn.executemany("INSERT OR IGNORE INTO turn_keys (turn_rowid, kind, key) VALUES (?, 'observation', ?)",
                     [(rowid, key) for rowid in rowids for key in keys])
    return conn.total_changes - before


def drop_unused_observations(conn: sqlite3.Connection) -> int:
    """Deletes the vectors of observations no turn holds any more (after a forget); how many went."""
    cursor = conn.execute("DELETE FROM observation_vectors WHERE key NOT IN "
                          "(SELECT key FROM turn_keys WHERE kind = 'observation')")
    return int(cursor.rowcount)


def observation_vectors(conn: sqlite3.Connection, after_id: int,
                        embedder_key: str | None) -> list[tuple[int, str, bytes]]:
    """(id, text, vector) of the observations after `after_id` that `embedder_key` made, by id."""
    return [(int(r[0]), str(r[1]), bytes(r[2])) for r in conn.execute(
        "SELECT id, key, embedding FROM observation_vectors WHERE id > ? AND (? IS NULL OR embedder = ?) ORDER BY id",
        (after_id, embedder_key, embedder_key))]


def last_observation_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM observation_vectors").fetchone()[0])


def turns_with(conn: sqlite3.Connection, kind: str, keys: Sequence[str], speaker: str | None = None) -> list[int]:
    """Rowids of the turns holding any of `keys` (of `speaker` only, when given)."""
    keys = list(keys)[:MAX_KEYS]
    if not keys:
        return []
    marks = ",".join("?" * len(keys))
    if speaker is None:
        rows = conn.execute(f"SELECT DISTINCT turn_rowid FROM turn_keys WHERE kind = ? AND key IN ({marks})",
                            (kind, *keys))
    else:
        rows = conn.execute(
            f"SELECT DISTINCT k.turn_rowid FROM turn_keys k JOIN turns t ON t.rowid = k.turn_rowid "
            f"WHERE k.kind = ? AND k.key IN ({marks}) AND t.speaker = ?", (kind, *keys, speaker))
    return [int(r[0]) for r in rows]


def list_keys(conn: sqlite3.Connection, *, kind: str | None = None, containing: str | None = None,
              turn_id: str | None = None, limit: int = 50, offset: int = 0) -> list[DerivedKey]:
    """Derived keys with their source turns, newest turns first, filtered by kind, text in the key, or turn."""
    where: list[str] = []
    params: list[Any] = []
    if kind is not None:
        where.append("k.kind = ?")
        params.append(kind)
    if containing:
        where.append("k.key LIKE ? ESCAPE '\\'")
        escaped = containing.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params.append(f"%{escaped}%")
    if turn_id is not None:
        where.append("t.id = ?")
        params.append(turn_id)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT k.kind, k.key, t.id, t.speaker, t.text FROM turn_keys k JOIN turns t ON t.rowid = k.turn_rowid "
        f"{clause} ORDER BY t.rowid DESC, k.kind, k.key LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
    return [DerivedKey(*row) for row in rows]


def forget_key(conn: sqlite3.Connection, kind: str, key: str, turn_id: str | None = None) -> int:
    """Deletes a key from every turn (or from `turn_id` only); how many rows went."""
    if turn_id is None:
        cursor = conn.execute("DELETE FROM turn_keys WHERE kind = ? AND key = ?", (kind, key))
    else:
        cursor = conn.execute("DELETE FROM turn_keys WHERE kind = ? AND key = ? AND turn_rowid IN "
                              "(SELECT rowid FROM turns WHERE id = ?)", (kind, key, turn_id))
    return int(cursor.rowcount)


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM turn_keys").fetchone()[0])
