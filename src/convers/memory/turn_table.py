"""The turns table and its word index as SQL over one connection: no locking, no error handling.

The store (memory/store.py) calls these under its lock, inside its transactions, and turns any
sqlite3 error into a MemoryStoreError that says what it was doing.
"""

from __future__ import annotations

import sqlite3
from datetime import tzinfo
from typing import Any

from convers.contracts.memory import MemoryTurn
from convers.memory.schema import COLUMNS, turn_from_row
from convers.memory.turn_text import EMBED_TEXT_VERSION, answered, when_words

# A row needs a (new) vector when it has none, when its vector was made from an older embedding
# text, or when another embedder made it. Parameters: EMBED_TEXT_VERSION, the embedder's key.
NEEDS_VECTOR = "(embedding IS NULL OR embed_version < ? OR (embedder IS NOT NULL AND embedder != ?))"


def insert_turn(conn: sqlite3.Connection, turn: MemoryTurn, source_id: str | None, vector: bytes | None,
                embedder_key: str | None, version: int = EMBED_TEXT_VERSION) -> int | None:
    """The new row's rowid, or None when a turn with this id is stored already. `version`: what the
    vector and its derived rows are made of (an older one is redone by the backfill)."""
    cursor = conn.execute(
        "INSERT INTO turns (id, session, time, speaker, role, text, kind, source_id, embedding, "
        "embed_version, embedder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (turn.id, turn.session, turn.time.isoformat(), turn.speaker, turn.role, turn.text, turn.kind, source_id,
         vector, version if vector is not None else 0, embedder_key if vector is not None else None),
    )
    return int(cursor.lastrowid) if cursor.rowcount == 1 else None  # type: ignore[arg-type]


def index_words(conn: sqlite3.Connection, rowid: int, turn: MemoryTurn, previous: MemoryTurn | None,
                zone: tzinfo) -> None:
    """(Re)writes the turn's row in the word index: its words, who said it, the local date, what it answers."""
    conn.execute("DELETE FROM turns_words WHERE rowid = ?", (rowid,))
    conn.execute(
        "INSERT INTO turns_words (rowid, text, speaker, when_words, answers) VALUES (?, ?, ?, ?, ?)",
        (rowid, turn.text, turn.speaker, when_words(turn.time, zone), answered(turn, previous)),
    )


def set_vector(conn: sqlite3.Connection, rowid: int, vector: bytes, embedder_key: str | None, *,
               only_if_missing: bool = False, version: int = EMBED_TEXT_VERSION) -> bool:
    """Stores a row's vector (made from today's embedding text, with its derived rows as of `version`);
    False when the row is gone (or has one)."""
    missing = " AND embedding IS NULL" if only_if_missing else ""
    cursor = conn.execute(
        f"UPDATE turns SET embedding = ?, embed_version = ?, embedder = ? WHERE rowid = ?{missing}",
        (vector, version, embedder_key, rowid),
    )
    return cursor.rowcount == 1


def previous_turn(conn: sqlite3.Connection, session: str, before_rowid: int | None = None) -> MemoryTurn | None:
    """The latest raw turn of `session` (before `before_rowid`): the one a new turn may answer."""
    bound = "" if before_rowid is None else "AND rowid < ?"
    params: tuple[Any, ...] = (session,) if before_rowid is None else (session, before_rowid)
    row = conn.execute(
        f"SELECT {COLUMNS} FROM turns WHERE session = ? AND kind = 'turn' {bound} ORDER BY rowid DESC LIMIT 1", params
    ).fetchone()
    return turn_from_row(row) if row else None


def needing_vectors(conn: sqlite3.Connection, after_rowid: int, embedder_key: str,
                    limit: int) -> list[tuple[int, MemoryTurn]]:
    """Up to `limit` rows after `after_rowid` that need a vector (NEEDS_VECTOR), by rowid."""
    rows = conn.execute(
        f"SELECT rowid, {COLUMNS} FROM turns WHERE rowid > ? AND {NEEDS_VECTOR} ORDER BY rowid LIMIT ?",
        (after_rowid, EMBED_TEXT_VERSION, embedder_key, limit),
    ).fetchall()
    return [(int(r[0]), turn_from_row(r[1:])) for r in rows]


def count_needing_vectors(conn: sqlite3.Connection, embedder_key: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM turns WHERE {NEEDS_VECTOR}",
                            (EMBED_TEXT_VERSION, embedder_key)).fetchone()[0])


def without_vector(conn: sqlite3.Connection, turn_id: str) -> tuple[int, MemoryTurn] | None:
    """The rowid and turn of `turn_id` if it is stored without a vector."""
    row = conn.execute(f"SELECT rowid, {COLUMNS} FROM turns WHERE id = ? AND embedding IS NULL", (turn_id,)).fetchone()
    return None if row is None else (int(row[0]), turn_from_row(row[1:]))


def delete_with_digests(conn: sqlite3.Connection, turn_id: str) -> list[int]:
    """Deletes a turn and the digests made from it, from the table and the word index; their rowids."""
    rowids = [r[0] for r in conn.execute("SELECT rowid FROM turns WHERE id = ? OR source_id = ?", (turn_id, turn_id))]
    for rowid in rowids:
        conn.execute("DELETE FROM turns WHERE rowid = ?", (rowid,))
        conn.execute("DELETE FROM turns_words WHERE rowid = ?", (rowid,))
    return rowids


def delete_all(conn: sqlite3.Connection) -> int:
    """Deletes every row; how many there were."""
    count = int(conn.execute("SELECT count(*) FROM turns").fetchone()[0])
    conn.execute("DELETE FROM turns")
    conn.execute("DELETE FROM turns_words")
    return count


def count(conn: sqlite3.Connection, kind: str | None) -> int:
    if kind is None:
        return int(conn.execute("SELECT count(*) FROM turns").fetchone()[0])
    return int(conn.execute("SELECT count(*) FROM turns WHERE kind = ?", (kind,)).fetchone()[0])


def counts(conn: sqlite3.Connection, embedder_key: str | None) -> tuple[int, int, int, int]:
    """(turns, digests, rows without a vector, rows whose vector is stale for this embedder)."""
    row = conn.execute(
        "SELECT sum(kind = 'turn'), sum(kind = 'digest'), sum(embedding IS NULL), "
        "sum(embedding IS NOT NULL AND (embed_version < ? OR (? IS NOT NULL AND embedder IS NOT NULL "
        "AND embedder != ?))) FROM turns",
        (EMBED_TEXT_VERSION, embedder_key, embedder_key),
    ).fetchone()
    turns, digests, unembedded, stale = (int(n or 0) for n in row)
    return turns, digests, unembedded, stale


def embedders(conn: sqlite3.Connection) -> dict[str, int]:
    """How many stored vectors each embedder made ('an earlier version' for rows from before schema 2)."""
    rows = conn.execute("SELECT coalesce(embedder, 'an earlier version'), count(*) FROM turns "
                        "WHERE embedding IS NOT NULL GROUP BY 1 ORDER BY 2 DESC").fetchall()
    return {str(name): int(n) for name, n in rows}


def rowid_of(conn: sqlite3.Connection, turn_id: str) -> int | None:
    row = conn.execute("SELECT rowid FROM turns WHERE id = ?", (turn_id,)).fetchone()
    return None if row is None else int(row[0])


def get(conn: sqlite3.Connection, turn_id: str) -> MemoryTurn | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM turns WHERE id = ?", (turn_id,)).fetchone()
    return turn_from_row(row) if row else None


def list_turns(conn: sqlite3.Connection, limit: int, offset: int, *, newest_first: bool, kind: str | None,
               session: str | None, role: str | None, exclude_session: str | None) -> list[MemoryTurn]:
    where: list[str] = []
    params: list[Any] = []
    for column, value, op in (("kind", kind, "="), ("session", session, "="), ("role", role, "="),
                              ("session", exclude_session, "!=")):
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    order = "DESC" if newest_first else "ASC"
    rows = conn.execute(f"SELECT {COLUMNS} FROM turns {clause} ORDER BY rowid {order} LIMIT ? OFFSET ?",
                        (*params, limit, offset)).fetchall()
    return [turn_from_row(r) for r in rows]
